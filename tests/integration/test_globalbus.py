"""The global bus: every event of an execution is backed up on its grain's Kafka topic flagged
`processing`, then flagged `finished` once consumed (read back with a real librdkafka consumer);
and bus.mode global runs every hop through Kafka with the same results."""

import json
import os
import time
import unittest

from confluent_kafka import Consumer, TopicPartition

from harness import Sandd, SanddTestCase, write_bundle

APP = """
app: gb
grains:
  a: {runtime: python, code: g.py, handler: a}
  b: {runtime: python, code: g.py, handler: b}
  j: {runtime: python, code: g.py, handler: j}
workflows:
  two:
    start: a
    steps:
      a: {next: b}
      b: {}
  fan:
    start: a
    steps:
      a: {next: [b, c]}
      b: {next: j}
      c: {grain: b, next: j}
      j: {}
"""
CODE = """
def a(event, context):
    return {"v": event["v"] + 1}
def b(event, context):
    return {"v": event["v"] * 10}
def j(event, context):
    return {"sum": event["b"]["v"] + event["c"]["v"]}
"""


def read_topic(bootstrap, topic, want, timeout=20):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-%f" % time.time(),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline and not want(out):
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        out.append((m.key().decode() if m.key() else None, json.loads(m.value())))
    c.close()
    return out


class GlobalBusBackups(SanddTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sandd.deploy(write_bundle(cls.tmp + "/gb", {"app.yaml": APP, "g.py": CODE}))
        with open(os.path.join(cls.sandd.data_dir, "run", "kafka.bootstrap")) as f:
            cls.bootstrap = f.read().strip()

    def test_processing_then_finished(self):
        r = self.sandd.request("POST", "/v1/apps/gb/workflows/two", {"v": 1})
        self.assertEqual(r.json(), {"v": 20})
        eid = r.headers["X-Sand-Execution-Id"]

        def flags_for(records):
            by_event = {}
            for key, v in records:
                if v.get("x", eid) != eid and v["flag"] != "finished":
                    continue
                by_event.setdefault(key, []).append(v["flag"])
            return by_event

        for topic, step in (("sand.gb.a", "a"), ("sand.gb.b", "b")):
            def done(recs):
                ours = [k for k, v in recs if v.get("x") == eid]
                return ours and all("finished" in flags_for(recs).get(k, []) for k in ours)
            recs = read_topic(self.bootstrap, topic, done)
            mine = {k: v for k, v in recs if v.get("x") == eid}
            self.assertEqual(len(mine), 1, recs)
            key = next(iter(mine))
            self.assertEqual(mine[key]["flag"], "processing")
            self.assertEqual(mine[key]["s"], step)
            flags = flags_for(recs)[key]
            self.assertEqual(flags, ["processing", "finished"])  # in this order, on one partition

    def test_backup_carries_the_event(self):
        r = self.sandd.request("POST", "/v1/apps/gb/workflows/two", {"v": 5})
        eid = r.headers["X-Sand-Execution-Id"]
        recs = read_topic(self.bootstrap, "sand.gb.b",
                          lambda rs: any(v.get("x") == eid for _, v in rs))
        ev = [v for _, v in recs if v.get("x") == eid][0]
        self.assertEqual(ev["e"], {"v": 6})  # a's output is b's event


class GlobalMode(unittest.TestCase):
    """bus.mode global: the OpenWhisk-like baseline, every hop through Kafka."""

    @classmethod
    def setUpClass(cls):
        cls.sandd = Sandd({"bus.mode": "global"}).start()
        import tempfile
        cls.tmp = tempfile.mkdtemp()
        cls.sandd.deploy(write_bundle(cls.tmp + "/gb", {"app.yaml": APP, "g.py": CODE}))

    @classmethod
    def tearDownClass(cls):
        cls.sandd.stop()

    def test_sequence_and_join(self):
        for _ in range(3):
            r = self.sandd.request("POST", "/v1/apps/gb/workflows/two", {"v": 1})
            self.assertEqual(r.status, 200, r.body)
            self.assertEqual(r.json(), {"v": 20})
        r = self.sandd.request("POST", "/v1/apps/gb/workflows/fan", {"v": 1})
        self.assertEqual(r.json(), {"sum": 40})


if __name__ == "__main__":
    unittest.main()
