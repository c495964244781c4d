"""Every workflow construct of SPEC section 3 run through a real sandd: sequence, fan-out, join,
dynamic next, retry, catch, timeouts, crashes, single-grain invocation, async executions and
execution records."""

import json
import os
import time
import unittest

from harness import SanddTestCase

APP_YAML = """
app: flows
grains:
  inc:      {runtime: python, code: grains/g.py, handler: inc}
  double:   {runtime: python, code: grains/g.py, handler: double}
  merge:    {runtime: python, code: grains/g.py, handler: merge}
  router:   {runtime: python, code: grains/g.py, handler: router}
  flaky:    {runtime: python, code: grains/g.py, handler: flaky}
  boom:     {runtime: python, code: grains/g.py, handler: boom}
  rescue:   {runtime: python, code: grains/g.py, handler: rescue}
  crash:    {runtime: python, code: grains/g.py, handler: crash}
  segv:     {runtime: python, code: grains/g.py, handler: segv}
  slow:     {runtime: python, code: grains/g.py, handler: slow, timeout: 500ms}
  hog:      {runtime: python, code: grains/g.py, handler: hog, memory: 64Mi, timeout: 20s}
  ctx:      {runtime: python, code: grains/g.py, handler: ctx}
workflows:
  seq:
    start: a
    steps:
      a: {grain: inc, next: b}
      b: {grain: double, next: c}
      c: {grain: inc}
  fan:
    start: a
    steps:
      a: {grain: inc, next: [x, y]}
      x: {grain: double, next: j}
      y: {grain: inc, next: j}
      j: {grain: merge}
  dyn:
    start: r
    steps:
      r: {grain: router, next: small, catch: big}
      small: {grain: inc}
      big: {grain: double}   # reached only through context.next (and catch)
  retry:
    start: f
    steps:
      f: {grain: flaky, retry: {max: 2, backoff: 50ms}}
  caught:
    start: b
    steps:
      b: {grain: boom, catch: r}
      r: {grain: rescue}
  failing:
    start: b
    steps:
      b: {grain: boom}
  crashing:
    start: c
    steps:
      c: {grain: crash}
  segfault:
    start: s
    steps:
      s: {grain: segv}
  slowwf:
    start: s
    steps:
      s: {grain: slow}
  hogwf:
    start: h
    steps:
      h: {grain: hog}
  context:
    start: c
    steps:
      c: {grain: ctx}
"""

GRAINS = r'''
import os, time, ctypes

def inc(event, context):
    return {"n": event["n"] + 1}

def double(event, context):
    return {"n": event["n"] * 2}

def merge(event, context):
    return {"sum": sum(v["n"] for v in event.values()), "from": sorted(event.keys())}

def router(event, context):
    if event["n"] < 10:
        context.next("small", {"n": event["n"]})
    else:
        context.next("big", {"n": event["n"]})
    return None

def flaky(event, context):
    if context.attempt < 3:
        raise RuntimeError("attempt %d fails" % context.attempt)
    return {"attempt": context.attempt}

def boom(event, context):
    raise ValueError("bad value %s" % event.get("v"))

def rescue(event, context):
    return {"rescued": event["type"], "message": event["message"], "step": event["step"]}

def crash(event, context):
    os._exit(3)

def segv(event, context):
    ctypes.string_at(0)

def slow(event, context):
    time.sleep(5)
    return {}

def hog(event, context):
    keep = []
    for _ in range(128):  # up to 1 GiB, written: resident
        keep.append(b"x" * (8 << 20))
        time.sleep(0.01)
    return {"survived": len(keep)}

def ctx(event, context):
    context.log("hello %s", "log")
    return {"app": context.app, "grain": context.grain, "step": context.step,
            "execution_id": context.execution_id, "attempt": context.attempt,
            "remaining": context.remaining_ms() > 0, "pid": os.getpid()}
'''


class WorkflowTests(SanddTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.tmp + "/flows"
        from harness import write_bundle
        write_bundle(d, {"app.yaml": APP_YAML, "grains/g.py": GRAINS})
        cls.sandd.deploy(d)

    def invoke(self, wf, event, expect=200):
        r = self.sandd.request("POST", "/v1/apps/flows/workflows/" + wf, event)
        self.assertEqual(r.status, expect, r.body)
        return r

    def test_sequence(self):
        r = self.invoke("seq", {"n": 1})
        self.assertEqual(r.json(), {"n": 5})  # (1+1)*2+1
        ex = self.sandd.request("GET", "/v1/executions/" + r.headers["X-Sand-Execution-Id"]).json()
        self.assertEqual(ex["status"], "succeeded")
        self.assertEqual([s["step"] for s in ex["steps"]], ["a", "b", "c"])
        for s in ex["steps"]:
            self.assertEqual(s["status"], "succeeded")
            self.assertLessEqual(s["queued_us"], s["started_us"])
            self.assertLessEqual(s["started_us"], s["finished_us"])
            self.assertGreater(s["pid"], 0)
        # each hop starts after the previous step finished
        self.assertLessEqual(ex["steps"][0]["finished_us"], ex["steps"][1]["started_us"])
        self.assertEqual(ex["input"], {"n": 1})
        self.assertEqual(ex["output"], {"n": 5})

    def test_fanout_join(self):
        r = self.invoke("fan", {"n": 1})
        # a: 2; x: 4; y: 3; join gets {"x": {"n":4}, "y": {"n":3}}
        self.assertEqual(r.json(), {"sum": 7, "from": ["x", "y"]})
        ex = self.sandd.request("GET", "/v1/executions/" + r.headers["X-Sand-Execution-Id"]).json()
        self.assertEqual(sorted(s["step"] for s in ex["steps"]), ["a", "j", "x", "y"])

    def test_dynamic_next(self):
        self.assertEqual(self.invoke("dyn", {"n": 3}).json(), {"n": 4})    # small
        self.assertEqual(self.invoke("dyn", {"n": 20}).json(), {"n": 40})  # big

    def test_retry(self):
        r = self.invoke("retry", {})
        self.assertEqual(r.json(), {"attempt": 3})
        ex = self.sandd.request("GET", "/v1/executions/" + r.headers["X-Sand-Execution-Id"]).json()
        self.assertEqual([s["attempt"] for s in ex["steps"]], [1, 2, 3])
        self.assertEqual([s["status"] for s in ex["steps"]], ["retrying", "retrying", "succeeded"])

    def test_catch(self):
        r = self.invoke("caught", {"v": 7})
        self.assertEqual(r.json(), {"rescued": "ValueError", "message": "bad value 7", "step": "b"})

    def test_failure_error_object(self):
        r = self.invoke("failing", {"v": 1}, expect=502)
        body = r.json()
        err = body["error"]
        self.assertEqual(err["type"], "ValueError")
        self.assertEqual(err["message"], "bad value 1")
        self.assertEqual(err["step"], "b")
        self.assertEqual(err["grain"], "boom")
        self.assertEqual(err["attempt"], 1)
        self.assertIn("Traceback", err["traceback"])
        self.assertEqual(body["execution_id"], r.headers["X-Sand-Execution-Id"])
        ex = self.sandd.request("GET", "/v1/executions/" + body["execution_id"]).json()
        self.assertEqual(ex["status"], "failed")
        self.assertEqual(ex["error"]["type"], "ValueError")

    def test_crash_and_worker_lives_on(self):
        err = self.invoke("crashing", {}, expect=502).json()["error"]
        self.assertEqual(err["type"], "Crashed")
        err = self.invoke("segfault", {}, expect=502).json()["error"]
        self.assertEqual(err["type"], "Crashed")
        if not os.environ.get("SAND_SANITIZED"):  # AddressSanitizer turns SIGSEGV into an exit
            self.assertEqual(err["signal"], 11)
        # the workers survived: the same grains keep serving
        self.assertEqual(self.invoke("crashing", {}, expect=502).json()["error"]["type"], "Crashed")
        self.assertEqual(self.invoke("seq", {"n": 0}).json(), {"n": 3})

    def test_instance_timeout(self):
        t0 = time.time()
        err = self.invoke("slowwf", {}, expect=502).json()["error"]
        self.assertEqual(err["type"], "Timeout")
        self.assertLess(time.time() - t0, 4.5)  # killed at 500 ms, not after the 5 s sleep

    def test_instance_memory_limit(self):
        err = self.invoke("hogwf", {}, expect=502).json()["error"]
        self.assertEqual(err["type"], "MemoryLimit")
        self.assertIn("67108864", err["message"])
        # only that instance was killed: the app keeps serving
        self.assertEqual(self.invoke("seq", {"n": 0}).json(), {"n": 3})

    def test_context(self):
        r = self.invoke("context", {})
        out = r.json()
        self.assertEqual(out["app"], "flows")
        self.assertEqual(out["grain"], "ctx")
        self.assertEqual(out["step"], "c")
        self.assertEqual(out["execution_id"], r.headers["X-Sand-Execution-Id"])
        self.assertEqual(out["attempt"], 1)
        self.assertTrue(out["remaining"])

    def test_forked_instances(self):
        # one grain instance per event: every event runs in a fresh process
        pids = {self.invoke("context", {}).json()["pid"] for _ in range(5)}
        self.assertEqual(len(pids), 5)

    def test_grain_invocation(self):
        r = self.sandd.request("POST", "/v1/apps/flows/grains/double", {"n": 21})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"n": 42})

    def test_async_hundred(self):
        ids = []
        for i in range(100):
            r = self.sandd.request("POST", "/v1/apps/flows/workflows/seq?async=1", {"n": i})
            self.assertEqual(r.status, 202, r.body)
            ids.append((i, r.json()["execution_id"]))
        for i, eid in ids:
            ex = self.sandd.wait_execution(eid, timeout=60)
            self.assertEqual(ex["status"], "succeeded")
            self.assertEqual(ex["output"], {"n": (i + 1) * 2 + 1})

    def test_sandctl_invoke_and_get(self):
        rc, out, err = self.sandd.sandctl("invoke", "flows", "seq", "-d", '{"n": 2}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"n": 7})
        rc, out, err = self.sandd.sandctl("invoke", "flows", "failing", "-d", '{"v": 2}')
        self.assertEqual(rc, 1)
        self.assertIn("ValueError", err)
        rc, out, err = self.sandd.sandctl("invoke", "flows", "seq", "--async", "-d", '{"n": 2}')
        self.assertEqual(rc, 0, err)
        eid = out.strip()
        self.sandd.wait_execution(eid)
        rc, out, err = self.sandd.sandctl("get", eid, "--trace")
        self.assertEqual(rc, 0, err)
        for step in ("a", "b", "c"):
            self.assertIn(step, out)


if __name__ == "__main__":
    unittest.main()
