"""Puts then gets event["size"] bytes under one key event["n"] times (after 10 unrecorded
rounds) and returns the microseconds of each put, each get and each put + get."""
import os
import time


def handle(event, context):
    size, n = int(event.get("size", 1 << 20)), int(event.get("n", 100))
    value = os.urandom(size)
    key = "bench:" + context.execution_id
    put_us, get_us = [], []
    for i in range(n + 10):
        t0 = time.perf_counter_ns()
        context.put(key, value)
        t1 = time.perf_counter_ns()
        got = context.get(key)
        t2 = time.perf_counter_ns()
        if got != value:
            raise ValueError("the data layer returned a different value")
        if i >= 10:
            put_us.append((t1 - t0) / 1000)
            get_us.append((t2 - t1) / 1000)
    context.delete(key)
    return {"size": size, "put_us": put_us, "get_us": get_us,
            "put_get_us": [a + b for a, b in zip(put_us, get_us)]}
