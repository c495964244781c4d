"""extract: reads the image named in the event and extracts its metadata.

Event: {"image": "sample.jpg"} (a file of the bundle's images/ directory) or {"image": PATH}
(a path, relative to the bundle or absolute), optionally with "id". The raw bytes go to the
local data layer under "raw:<id>"; the output carries the key, not the bytes.
"""
import io
import os
import time
import uuid

from PIL import ExifTags, Image  # loaded once by the grain worker, shared by every instance

BUNDLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(BUNDLE, "images")
MAX_BYTES = 32 * 1024 * 1024


def _image_path(name):
    if not isinstance(name, str) or not name:
        raise ValueError('the event needs "image": a file name of images/ or a path')
    if "/" not in name:
        return os.path.join(IMAGES, name)
    return name if os.path.isabs(name) else os.path.join(BUNDLE, name)


def _json_value(value):
    """EXIF values as small JSON values (rationals as floats, bytes and long text dropped)."""
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        value = value.strip("\x00 ")
        return value if len(value) <= 128 else None
    if isinstance(value, tuple) and len(value) <= 8:
        items = [_json_value(v) for v in value]
        return None if None in items else items
    try:
        return float(value)  # IFDRational
    except (TypeError, ValueError):
        return None


def _exif(img):
    out = {}
    for tag, value in img.getexif().items():
        v = _json_value(value)
        if v is not None:
            out[ExifTags.TAGS.get(tag, str(tag))] = v
    return out


def handle(event, context):
    started = time.time()
    path = _image_path(event.get("image"))
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError("image %s is larger than %d bytes" % (path, MAX_BYTES))
    with Image.open(io.BytesIO(raw)) as img:
        metadata = {
            "format": img.format,
            "width": img.width,
            "height": img.height,
            "mode": img.mode,
            "exif": _exif(img),
        }
    image_id = str(event.get("id") or context.execution_id or uuid.uuid4().hex)
    key = "raw:" + image_id
    context.put(key, raw)
    context.log("extracted %s: %dx%d %s, %d bytes", os.path.basename(path), metadata["width"],
                metadata["height"], metadata["format"], len(raw))
    return {
        "id": image_id,
        "image": os.path.basename(path),
        "raw": key,
        "bytes": len(raw),
        "metadata": metadata,
        "compute_ms": round((time.time() - started) * 1000, 3),
    }
