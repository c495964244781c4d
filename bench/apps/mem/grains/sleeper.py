"""Sleeps for event["s"] seconds (default 2), then returns its pid."""
import os
import time


def handle(event, context):
    time.sleep(float(event.get("s", 2)))
    return {"pid": os.getpid()}
