"""transform: normalises the metadata extracted from the image.

Lower-case format, pixel count and orientation, and a fixed subset of EXIF fields under
stable names. The output goes to both thumbnail and store (a fan-out).
"""
import time

EXIF_FIELDS = {
    "Make": "camera_make",
    "Model": "camera_model",
    "DateTime": "taken_at",
    "Software": "software",
    "Orientation": "exif_orientation",
    "ImageDescription": "description",
}


def handle(event, context):
    started = time.time()
    meta = event["metadata"]
    width, height = int(meta["width"]), int(meta["height"])
    if width <= 0 or height <= 0:
        raise ValueError("image has no pixels (%dx%d)" % (width, height))
    exif = meta.get("exif") or {}
    normalised = {
        "format": str(meta.get("format") or "unknown").lower(),
        "width": width,
        "height": height,
        "megapixels": round(width * height / 1e6, 3),
        "orientation": "square" if width == height else
                       ("landscape" if width > height else "portrait"),
        "mode": meta.get("mode"),
        "bytes": event.get("bytes"),
    }
    for name, field in EXIF_FIELDS.items():
        if name in exif:
            normalised[field] = exif[name]
    return {
        "id": event["id"],
        "image": event.get("image"),
        "raw": event["raw"],
        "metadata": normalised,
        "compute_ms": round((time.time() - started) * 1000, 3),
    }
