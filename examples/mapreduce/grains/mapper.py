# One mapper grain for the three mapper steps: step mapN takes chunk N. Reads the chunk by its
# key, counts the words (lower-cased, punctuation stripped), stores the counts as JSON and
# passes on their key.
import collections
import json
import string


def handle(event, context):
    index = int(context.step[len("map"):])
    key = event["chunks"][index]
    chunk = context.get(key)
    if chunk is None:
        raise KeyError("chunk %s is gone" % key)
    words = [w.strip(string.punctuation).lower() for w in chunk.decode().split()]
    counts = collections.Counter(w for w in words if w)
    out = "counts:%s:%d" % (context.execution_id, index)
    context.put(out, json.dumps(counts, sort_keys=True))
    context.delete(key)
    return {"counts": out, "words": sum(counts.values())}
