"""The cold-start baseline (sandbox.cold: on): every event gets a fresh sandbox whose worker
loads the grain, serves that one event and exits; workflows still complete, and no sandbox is
left behind. Runs with the process driver here and with Docker in test_docker."""

import time
import unittest

from harness import SanddTestCase, write_bundle

APP = """
app: cold
grains:
  a: {runtime: python, code: g.py, handler: a}
  b: {runtime: python, code: g.py, handler: b}
workflows:
  w:
    start: a
    steps:
      a: {next: b}
      b: {}
"""
CODE = """
import os
WORKER = os.urandom(8).hex()  # module code runs once per grain worker, before it forks
def me():
    return WORKER
def a(event, context):
    return {"n": event["n"] + 1, "pids": [me()]}
def b(event, context):
    return {"n": event["n"] * 2, "pids": event["pids"] + [me()]}
"""


class ColdMode(SanddTestCase):
    config = {"sandbox.cold": "on"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sandd.deploy(write_bundle(cls.tmp + "/cold", {"app.yaml": APP, "g.py": CODE}))

    def test_fresh_worker_per_event(self):
        workers = set()
        for i in range(3):
            r = self.sandd.request("POST", "/v1/apps/cold/workflows/w", {"n": i})
            self.assertEqual(r.status, 200, r.body)
            out = r.json()
            self.assertEqual(out["n"], (i + 1) * 2)
            workers.update(out["pids"])  # the worker that forked each instance
        self.assertEqual(len(workers), 6)  # two steps x three executions, never the same worker
        deadline = time.time() + 20
        while time.time() < deadline:
            desc = self.sandd.request("GET", "/v1/apps/cold").json()
            if not desc["sandbox"]["ids"]:
                break
            time.sleep(0.2)
        self.assertEqual(desc["sandbox"]["ids"], [])  # each sandbox ended with its event


if __name__ == "__main__":
    unittest.main()
