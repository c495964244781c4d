"""store: stores the normalised metadata as JSON in the data layer under "meta:<id>"."""
import json
import time


def handle(event, context):
    started = time.time()
    key = "meta:" + event["id"]
    doc = json.dumps({"id": event["id"], "image": event.get("image"),
                      "metadata": event["metadata"]}, sort_keys=True)
    context.put(key, doc)
    return {
        "key": key,
        "bytes": len(doc),
        "metadata": event["metadata"],
        "compute_ms": round((time.time() - started) * 1000, 3),
    }
