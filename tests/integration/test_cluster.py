"""The global data layer on a real Redis Cluster (three redis-server nodes in cluster mode):
grains put and get keys in global scope wherever the cluster places them (MOVED/ASK followed),
and deleting the app removes its keys from every node."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from harness import Sandd, write_bundle

APP = """
app: gdata
grains:
  g: {runtime: python, code: g.py}
"""
CODE = """
def handle(event, context):
    for i in range(event["n"]):
        context.put("key-%d" % i, ("value-%d" % i).encode(), scope="global")
    got = [context.get("key-%d" % i, scope="global") for i in range(event["n"])]
    return {"ok": all(g == ("value-%d" % i).encode() for i, g in enumerate(got))}
"""


def cluster_port():
    """A free port p whose cluster bus port p+10000 is free too."""
    import random
    while True:
        p = random.randint(20000, 40000)
        try:
            for q in (p, p + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", q))
            return p
        except OSError:
            continue


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(args), capture_output=True,
                          text=True, timeout=30).stdout


class GlobalDataOnCluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="sand-cluster-")
        cls.ports = [cluster_port() for _ in range(3)]
        cls.procs = []
        for p in cls.ports:
            d = os.path.join(cls.dir, str(p))
            os.makedirs(d)
            cls.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", os.path.join(d, "nodes.conf"), "--dir", d, "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for p in cls.ports:
            for _ in range(100):
                if "PONG" in cli(p, "PING"):
                    break
                time.sleep(0.05)
        subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in cls.ports] +
                       ["--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        for _ in range(200):
            if "cluster_state:ok" in cli(cls.ports[0], "CLUSTER", "INFO"):
                break
            time.sleep(0.05)
        cls.sandd = Sandd({"global_data.redis": "tcp://127.0.0.1:%d" % cls.ports[0]}).start()
        cls.sandd.deploy(write_bundle(cls.dir + "/app", {"app.yaml": APP, "g.py": CODE}))

    @classmethod
    def tearDownClass(cls):
        cls.sandd.stop()
        for p in cls.procs:
            p.kill()
            p.wait()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def keys_per_node(self):
        return [len([k for k in cli(p, "KEYS", "sand:gdata:dg:*").split("\n") if k]) for p in self.ports]

    def test_put_get_spread_and_rm(self):
        r = self.sandd.request("POST", "/v1/apps/gdata/grains/g", {"n": 60})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"ok": True})
        counts = self.keys_per_node()
        self.assertEqual(sum(counts), 60)
        self.assertGreaterEqual(sum(1 for c in counts if c > 0), 2, counts)  # really spread
        rc, out, err = self.sandd.sandctl("rm", "gdata")
        self.assertEqual(rc, 0, err)
        deadline = time.time() + 10
        while sum(self.keys_per_node()) and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.keys_per_node(), [0, 0, 0])


if __name__ == "__main__":
    unittest.main()
