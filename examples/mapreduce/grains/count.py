# The join: its event maps each mapper step to its output. Reads the three count tables by key,
# sums them, deletes them, and returns the totals and the five most frequent words (ties in
# alphabetical order, so the result is deterministic).
import collections
import json


def handle(event, context):
    total = collections.Counter()
    for step in sorted(event):
        key = event[step]["counts"]
        raw = context.get(key)
        if raw is None:
            raise KeyError("counts %s are gone" % key)
        total.update(json.loads(raw))
        context.delete(key)
    top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return {"words": sum(total.values()), "distinct": len(total), "top": [list(kv) for kv in top]}
