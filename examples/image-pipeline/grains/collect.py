"""collect: the join of thumbnail and store, merged into the workflow's result.

A join's event maps each predecessor step to its output: {"thumbnail": {...}, "store": {...}}.
The raw image is no longer needed once both have run, so its key is deleted here.
"""
import time


def handle(event, context):
    started = time.time()
    thumb, stored = event["thumbnail"], event["store"]
    image_id = stored["key"].split(":", 1)[1]
    context.delete("raw:" + image_id)
    return {
        "id": image_id,
        "metadata": stored["metadata"],
        "thumbnail": {"key": thumb["key"], "width": thumb["width"], "height": thumb["height"],
                      "bytes": thumb["bytes"]},
        "stored": stored["key"],
        "compute_ms": {"thumbnail": thumb["compute_ms"], "store": stored["compute_ms"],
                       "collect": round((time.time() - started) * 1000, 3)},
    }
