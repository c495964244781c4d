"""Crash recovery (SPEC section 7): sandd killed with SIGKILL mid-execution and restarted completes
every execution that was in flight, each reaching one final state; a killed grain worker is
restarted by the supervisor and the events it had taken are re-delivered; so are the events whose
instances died with a killed zygote (the worker's forking process)."""

import os
import signal
import subprocess
import tempfile
import time
import unittest

from harness import Sandd, write_bundle

APP = """
app: rec
grains:
  slow: {runtime: python, code: g.py, handler: slow}
  fast: {runtime: python, code: g.py, handler: fast}
  serial: {runtime: python, code: g.py, handler: slow, concurrency: 1}
workflows:
  ser:
    start: s
    steps:
      s: {grain: serial, next: f}
      f: {grain: fast}
  w:
    start: s
    steps:
      s: {grain: slow, next: f}
      f: {grain: fast}
"""
CODE = """
import os, time
def slow(event, context):
    time.sleep(0.3)
    return {"i": event["i"], "pid": os.getpid()}
def fast(event, context):
    return {"i": event["i"], "done": True}
"""


class Recovery(unittest.TestCase):
    def setUp(self):
        self.sandd = Sandd().start()
        self.tmp = tempfile.mkdtemp()
        self.sandd.deploy(write_bundle(self.tmp + "/rec", {"app.yaml": APP, "g.py": CODE}))

    def tearDown(self):
        self.sandd.stop()

    def test_sandd_kill9_mid_execution(self):
        ids = []
        for i in range(30):
            r = self.sandd.request("POST", "/v1/apps/rec/workflows/w?async=1", {"i": i})
            self.assertEqual(r.status, 202)
            ids.append((i, r.json()["execution_id"]))
        time.sleep(0.4)
        self.sandd.kill9()
        time.sleep(0.5)
        self.sandd.start()
        for i, eid in ids:
            ex = self.sandd.wait_execution(eid, timeout=60)
            self.assertEqual(ex["status"], "succeeded", ex)
            self.assertEqual(ex["output"], {"i": i, "done": True})
        # still serving new work
        r = self.sandd.request("POST", "/v1/apps/rec/workflows/w", {"i": 99})
        self.assertEqual(r.json(), {"i": 99, "done": True})

    def test_local_bus_lost_replayed_from_global_bus(self):
        """The embedded Redis is killed with events in flight: sandd starts it again, finds it
        empty, and delivers the in-flight events again from their global-bus backups."""
        ids = []
        for i in range(12):  # one at a time, 0.3 s each: most are still queued at the kill
            r = self.sandd.request("POST", "/v1/apps/rec/workflows/ser?async=1", {"i": i})
            self.assertEqual(r.status, 202)
            ids.append((i, r.json()["execution_id"]))
        time.sleep(1.0)  # the backups reach the global bus (produced asynchronously)
        with open(os.path.join(self.sandd.data_dir, "run", "redis.pid")) as f:
            os.kill(int(f.read().strip()), signal.SIGKILL)
        for i, eid in ids:
            ex = self.sandd.wait_execution(eid, timeout=90)
            self.assertEqual(ex["status"], "succeeded", ex)
            self.assertEqual(ex["output"], {"i": i, "done": True})
        self.assertIn("replay done", self.sandd.logtext())

    def test_worker_killed_events_redelivered(self):
        desc = self.sandd.request("GET", "/v1/apps/rec").json()
        slow = [g for g in desc["grains"] if g["name"] == "slow"][0]
        pid = slow["workers"][0]["pid"]
        ids = [self.sandd.request("POST", "/v1/apps/rec/workflows/w?async=1", {"i": i}).json()["execution_id"]
               for i in range(10)]
        time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        for eid in ids:
            self.assertEqual(self.sandd.wait_execution(eid, timeout=60)["status"], "succeeded")
        desc = self.sandd.request("GET", "/v1/apps/rec").json()
        slow = [g for g in desc["grains"] if g["name"] == "slow"][0]
        self.assertNotEqual(slow["workers"][0]["pid"], pid)
        self.assertGreaterEqual(slow["workers"][0]["restarts"], 1)

    def test_zygote_killed_events_redelivered(self):
        desc = self.sandd.request("GET", "/v1/apps/rec").json()
        slow = [g for g in desc["grains"] if g["name"] == "slow"][0]
        worker = slow["workers"][0]["pid"]
        ids = [self.sandd.request("POST", "/v1/apps/rec/workflows/w?async=1", {"i": i}).json()["execution_id"]
               for i in range(10)]
        time.sleep(0.1)
        # the zygote is the worker's only child; the running instances are its children
        with open("/proc/%d/task/%d/children" % (worker, worker)) as f:
            zygotes = [int(p) for p in f.read().split()]
        self.assertEqual(len(zygotes), 1)
        with open("/proc/%d/task/%d/children" % (zygotes[0], zygotes[0])) as f:
            self.assertTrue(f.read().split(), "the zygote forked the instances")
        os.kill(zygotes[0], signal.SIGKILL)
        for eid in ids:
            rec = self.sandd.wait_execution(eid, timeout=60)
            self.assertEqual(rec["status"], "succeeded")
            self.assertEqual(rec["output"], {"i": rec["input"]["i"], "done": True})
        desc = self.sandd.request("GET", "/v1/apps/rec").json()
        slow = [g for g in desc["grains"] if g["name"] == "slow"][0]
        self.assertNotEqual(slow["workers"][0]["pid"], worker)


if __name__ == "__main__":
    unittest.main()
