"""thumbnail: makes a 128x128 (at most) JPEG thumbnail of the raw image.

Reads the bytes from the local data layer by the key in the event and puts the thumbnail back
under "thumb:<id>"; returns the key and the thumbnail's size.
"""
import io
import time

from PIL import Image

SIZE = (128, 128)


def handle(event, context):
    started = time.time()
    raw = context.get(event["raw"])
    if raw is None:
        raise KeyError("no image under '%s' in the local data layer" % event["raw"])
    with Image.open(io.BytesIO(raw)) as img:
        img.thumbnail(SIZE)
        thumb = img.convert("RGB") if img.mode not in ("RGB", "L") else img.copy()
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=85)
    data = out.getvalue()
    key = "thumb:" + event["id"]
    context.put(key, data)
    return {
        "key": key,
        "width": thumb.width,
        "height": thumb.height,
        "bytes": len(data),
        "compute_ms": round((time.time() - started) * 1000, 3),
    }
