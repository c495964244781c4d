# Test grain: does what event["op"] says.
import os
import sys
import time


def handle(event, context):
    op = event.get("op", "echo")
    if op == "echo":
        return event
    if op == "print":
        print("printed", context.execution_id)
        print("to stderr", file=sys.stderr)
        return "ok"
    if op == "raise":
        raise ValueError("bad thing %d" % event.get("n", 0))
    if op == "exit":
        os._exit(3)
    if op == "sleep":
        time.sleep(event["s"])
        return "slept"
    if op == "nojson":
        return {1, 2}
    if op == "next":
        for t in event["to"]:
            context.next(t, {"via": context.step, "to": t})
        return "routed"
    if op == "badnext":
        context.next("nosuchstep", {})
        return "unreachable"
    if op == "flaky":
        if context.attempt < 2:
            raise RuntimeError("attempt %d fails" % context.attempt)
        return {"attempt": context.attempt}
    if op == "ids":
        return {"app": context.app, "grain": context.grain, "step": context.step,
                "workflow": context.workflow, "x": context.execution_id,
                "attempt": context.attempt, "left": context.remaining_ms() > 0}
    if op == "dl":
        out = {}
        for n in (0, 1, 1024 * 1024):
            v = bytes((i * 7 + 3) % 256 for i in range(n))
            for scope in ("local", "global"):
                key = "py%d" % n
                context.put(key, v, scope=scope)
                got = context.get(key, scope=scope)
                context.delete(key, scope=scope)
                out["%s%d" % (scope, n)] = got == v and context.get(key, scope=scope) is None
        context.put("pykeep", "h\u00e9")
        try:
            context.put("big", b"x" * (3 * 1024 * 1024))
            out["big"] = "stored"
        except ValueError as e:
            out["big"] = "ValueError"
        return out
    return None
