"""The Docker sandbox driver through a real sandd (sandbox.driver: docker): the workflow tests of
test_workflows pass unchanged; a grain sees only its own sandbox's processes (PID 1 is
sand-supervisor), none of the host's files, cannot write outside /tmp, has no network but `lo`,
and cannot touch another app's keys through the Redis socket (ACL); a container killed through
the Docker API mid-flight is restarted by sandd and the events its workers had taken are
re-delivered; a sandd killed with SIGKILL and restarted adopts its running container and
finishes the executions in flight; `sandctl rm` leaves no container, key or ACL user; two apps with the same grain
names do not interfere; granularity grain runs one container per grain. Also prints the
deploy -> first result time and the per-event latency next to the process driver (no timed
assertions). Fails loudly when no Docker daemon answers on /var/run/docker.sock."""

import http.client
import json
import os
import socket
import statistics
import tempfile
import time
import unittest
import urllib.parse

import test_workflows
from harness import Sandd, SanddTestCase, write_bundle

DOCKER_SOCK = "/var/run/docker.sock"


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def docker(method, path, body=None):
    """One Docker Engine API call over the unix socket: (status, parsed JSON or None)."""
    c = _UnixHTTP(DOCKER_SOCK)
    try:
        c.request(method, "/v1.41" + path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"} if body is not None else {})
        r = c.getresponse()
        data = r.read()
        r.close()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, None
    finally:
        c.close()


def containers(labels):
    filt = json.dumps({"label": ["%s=%s" % kv for kv in labels.items()]})
    status, out = docker("GET", "/containers/json?all=1&filters=" + urllib.parse.quote(filt))
    assert status == 200, out
    return out


def redis(sandd, *args):
    """One command on sandd's embedded Redis as its default user (RESP over the unix socket)."""
    run = os.path.join(sandd.data_dir, "run")
    with open(os.path.join(run, "redis.pass")) as f:
        pw = f.read().strip()
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(run, "redis.sock"))
    f = s.makefile("rb")

    def cmd(*a):
        out = b"*%d\r\n" % len(a)
        for x in a:
            x = x.encode() if isinstance(x, str) else x
            out += b"$%d\r\n%s\r\n" % (len(x), x)
        s.sendall(out)
        return read()

    def read():
        line = f.readline()[:-2]
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            v = f.read(n + 2)[:-2]
            return v.decode(errors="replace")
        if t == b"*":
            return [read() for _ in range(int(rest))]
        raise AssertionError("bad RESP line %r" % line)

    try:
        assert cmd("AUTH", pw) == "OK"
        return cmd(*args)
    finally:
        f.close()
        s.close()


def sandbox_id(sandd, app, timeout=10):
    """The app's container id (the app can be ready, its workers reporting, a moment before the
    driver has heard back from the start call)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        cid = sandd.request("GET", "/v1/apps/" + app).json()["sandbox"]["id"]
        if cid:
            return cid
        time.sleep(0.05)
    raise AssertionError("app %s has no container id" % app)


def setUpModule():
    try:
        status, _ = docker("GET", "/_ping")
    except OSError as e:
        raise AssertionError("no Docker daemon on %s (%s): start it with scripts/start-services.sh"
                             % (DOCKER_SOCK, e))
    if status != 200:
        raise AssertionError("Docker daemon on %s answers %d to /_ping" % (DOCKER_SOCK, status))


class DockerWorkflows(test_workflows.WorkflowTests):
    """Every workflow construct, unchanged, with the grains in a container."""
    driver = "docker"


PROBE_APP = """
app: %(app)s
grains:
  probe: {runtime: python, code: g.py, handler: probe}
  raw:   {runtime: python, code: g.py, handler: raw}
  slow:  {runtime: python, code: g.py, handler: slow}
  fast:  {runtime: python, code: g.py, handler: fast}
workflows:
  p:
    start: a
    steps:
      a: {grain: probe}
  r:
    start: a
    steps:
      a: {grain: raw}
  w:
    start: s
    steps:
      s: {grain: slow, next: f}
      f: {grain: fast}
"""

PROBE_CODE = r'''
import os, socket, time

def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None

def _writable(path):
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        return True
    except OSError:
        return False

def probe(event, context):
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            c = _cmdline(d)
            try:
                with open("/proc/%s/stat" % d) as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] in "ZX"
            except (OSError, IndexError):
                zombie = True
            if c and not zombie:  # finished instances not reaped yet, or exiting (empty cmdline)
                procs[d] = c
    try:
        nets = sorted(os.listdir("/sys/class/net"))
    except OSError as e:
        nets = ["error: %s" % e]
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", event["port"]))
        tcp = "connected"
    except OSError as e:
        tcp = "refused: %s" % e
    finally:
        s.close()
    return {"procs": procs, "pid": os.getpid(), "uid": os.getuid(),
            "exists": {p: os.path.exists(p) for p in event["paths"]},
            "writable": {p: _writable(p) for p in ["/x", "/app/x", "/usr/x", "/tmp/x"]},
            "nets": nets, "tcp": tcp, "app_files": sorted(os.listdir("/app")),
            "marker": open("/app/marker.txt").read().strip()}

def _resp(sock, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return sock.recv(65536).decode(errors="replace")

def raw(event, context):
    """Talks the Redis protocol on the shared socket with this app's own ACL credentials."""
    path = os.environ["SAND_REDIS"][len("unix:"):]
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    out = {"auth": _resp(s, "AUTH", os.environ["SAND_REDIS_USER"], os.environ["SAND_REDIS_PASS"])}
    other = event["other"]
    out["own_set"] = _resp(s, "SET", "sand:%s:dl:mine" % context.app, "1")
    out["other_get"] = _resp(s, "GET", "sand:%s:dl:secret" % other)
    out["other_set"] = _resp(s, "SET", "sand:%s:dl:secret" % other, "stolen")
    out["other_queue"] = _resp(s, "XADD", "sand:%s:q:probe" % other, "*", "e", "{}")
    out["keys"] = _resp(s, "KEYS", "*")
    s.close()
    return out

def slow(event, context):
    time.sleep(0.3)
    return {"i": event["i"]}

def fast(event, context):
    return {"i": event["i"], "done": True}
'''


class DockerSandbox(SanddTestCase):
    """Isolation and life cycle, two apps with the same grain names in one docker sandd."""
    driver = "docker"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dirs = {}
        for app in ("isoa", "isob"):
            cls.dirs[app] = write_bundle(os.path.join(cls.tmp, app), {
                "app.yaml": PROBE_APP % {"app": app}, "g.py": PROBE_CODE,
                "marker.txt": "bundle of " + app})
        t0 = time.time()
        cls.sandd.deploy(cls.dirs["isoa"])
        r = cls.sandd.request("POST", "/v1/apps/isoa/workflows/w", {"i": 0})
        cls.first_result_s = time.time() - t0
        assert r.status == 200, r.body
        print("\n[docker] deploy -> ready -> first result: %.3f s" % cls.first_result_s)
        cls.sandd.deploy(cls.dirs["isob"])

    def probe(self, app):
        r = self.sandd.request("POST", "/v1/apps/%s/workflows/p" % app, {
            "port": self.sandd.port,
            "paths": [self.sandd.data_dir, "/root", "/home", "/etc/shadow", "/work/main/src",
                      "/work/main/CMakeLists.txt", self.dirs["isoa"], self.dirs["isob"]]})
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def test_pid_namespace(self):
        out = self.probe("isoa")
        procs = out["procs"]
        self.assertIn("sand-supervisor", procs["1"])
        # only the sandbox's own processes: the supervisor and its grain workers (instances are
        # forks of a worker); no sandd, redis-server or the other app's workers
        for pid, cmd in procs.items():
            self.assertRegex(cmd, r"sand-(supervisor|worker-python)", (pid, procs))
        self.assertIn(str(out["pid"]), procs)
        workers = [c for c in procs.values() if "--grain" in c]
        self.assertGreaterEqual(len(workers), 4, procs)  # probe, raw, slow, fast
        self.assertEqual(out["uid"], 65534)

    def test_no_host_files(self):
        out = self.probe("isoa")
        for path, present in out["exists"].items():
            self.assertFalse(present, "%s is visible inside the sandbox" % path)
        self.assertEqual(out["marker"], "bundle of isoa")
        self.assertEqual(out["app_files"], ["app.yaml", "g.py", "marker.txt"])

    def test_read_only_except_tmp(self):
        w = self.probe("isoa")["writable"]
        self.assertEqual(w, {"/x": False, "/app/x": False, "/usr/x": False, "/tmp/x": True})

    def test_no_network(self):
        out = self.probe("isoa")
        self.assertEqual(out["nets"], ["lo"])
        self.assertTrue(out["tcp"].startswith("refused"), out["tcp"])

    def test_same_grain_names_do_not_interfere(self):
        a, b = self.probe("isoa"), self.probe("isob")
        self.assertEqual(a["marker"], "bundle of isoa")
        self.assertEqual(b["marker"], "bundle of isob")
        ca = containers({"sand.app": "isoa", "sand.data_dir": self.sandd.data_dir})
        cb = containers({"sand.app": "isob", "sand.data_dir": self.sandd.data_dir})
        self.assertEqual(len(ca), 1)
        self.assertEqual(len(cb), 1)
        self.assertNotEqual(ca[0]["Id"], cb[0]["Id"])
        # both run a "slow" grain: executions of each app land in their own container
        ids = [(app, self.sandd.request("POST", "/v1/apps/%s/workflows/w?async=1" % app,
                                        {"i": i}).json()["execution_id"])
               for i in range(4) for app in ("isoa", "isob")]
        for app, eid in ids:
            ex = self.sandd.wait_execution(eid)
            self.assertEqual(ex["status"], "succeeded", ex)
            self.assertEqual(ex["app"], app)

    def test_redis_acl_refuses_other_app(self):
        redis(self.sandd, "SET", "sand:isob:dl:secret", "s3cret")
        r = self.sandd.request("POST", "/v1/apps/isoa/workflows/r", {"other": "isob"})
        self.assertEqual(r.status, 200, r.body)
        out = r.json()
        self.assertTrue(out["auth"].startswith("+OK"), out)
        self.assertTrue(out["own_set"].startswith("+OK"), out)
        for k in ("other_get", "other_set", "other_queue", "keys"):
            self.assertIn("NOPERM", out[k], (k, out))
        self.assertEqual(redis(self.sandd, "GET", "sand:isob:dl:secret"), "s3cret")

    def test_container_killed_mid_flight(self):
        cid = sandbox_id(self.sandd, "isoa")
        desc = self.sandd.request("GET", "/v1/apps/isoa").json()
        restarts = desc["sandbox"]["restarts"]
        self.assertEqual(len(cid), 64)
        ids = [self.sandd.request("POST", "/v1/apps/isoa/workflows/w?async=1", {"i": i}).json()[
            "execution_id"] for i in range(10)]
        time.sleep(0.2)
        status, out = docker("POST", "/containers/%s/kill" % cid)
        self.assertEqual(status, 204, out)
        for i, eid in enumerate(ids):
            ex = self.sandd.wait_execution(eid, timeout=90)
            self.assertEqual(ex["status"], "succeeded", ex)
            self.assertEqual(ex["output"], {"i": i, "done": True})
        desc = self.sandd.request("GET", "/v1/apps/isoa").json()
        self.assertNotEqual(desc["sandbox"]["id"], cid)
        self.assertGreater(desc["sandbox"]["restarts"], restarts)
        # the killed container was removed, not left behind
        self.assertEqual(docker("GET", "/containers/%s/json" % cid)[0], 404)

    def test_status_shows_container(self):
        cid = sandbox_id(self.sandd, "isob")
        rc, out, err = self.sandd.sandctl("status", "isob")
        self.assertEqual(rc, 0, err)
        desc = self.sandd.request("GET", "/v1/apps/isob").json()
        self.assertIn(cid[:12], out)
        self.assertEqual(desc["sandbox"]["driver"], "docker")
        self.assertGreater(desc["sandbox"]["memory_bytes"], 0)
        self.assertGreater(desc["sandbox"]["pids"], 1)
        # workers are shown with their host pids (the container's own are kept as sandbox_pid)
        for g in desc["grains"]:
            w = g["workers"][0]
            self.assertNotEqual(w["pid"], w["sandbox_pid"])
            with open("/proc/%d/cmdline" % w["pid"], "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
            self.assertIn("sand-worker", cmd)
            self.assertIn(g["name"], cmd)

    def test_rm_leaves_nothing(self):
        d = write_bundle(os.path.join(self.tmp, "gone"), {
            "app.yaml": PROBE_APP % {"app": "gone"}, "g.py": PROBE_CODE, "marker.txt": "x"})
        self.sandd.deploy(d)
        r = self.sandd.request("POST", "/v1/apps/gone/workflows/w", {"i": 1})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(len(containers({"sand.app": "gone",
                                         "sand.data_dir": self.sandd.data_dir})), 1)
        self.assertTrue(redis(self.sandd, "KEYS", "sand:gone:*"))
        self.assertIn("app-gone", " ".join(redis(self.sandd, "ACL", "USERS")))
        rc, out, err = self.sandd.sandctl("rm", "gone")
        self.assertEqual(rc, 0, err)
        self.assertEqual(containers({"sand.app": "gone", "sand.data_dir": self.sandd.data_dir}), [])
        self.assertEqual(redis(self.sandd, "KEYS", "sand:gone:*"), [])
        self.assertNotIn("app-gone", redis(self.sandd, "ACL", "USERS"))


GRAIN_APP = """
app: pergrain
grains:
  a: {runtime: python, code: g.py, handler: a}
  b: {runtime: python, code: g.py, handler: b}
workflows:
  w:
    start: a
    steps:
      a: {grain: a, next: b}
      b: {grain: b}
"""
GRAIN_CODE = """
import os
def a(event, context):
    return {"seen": sorted(p for p in os.listdir("/proc") if p.isdigit()).__len__()}
def b(event, context):
    return {"ok": True, "n": event["seen"]}
"""


class DockerGrainGranularity(unittest.TestCase):
    def test_container_per_grain(self):
        s = Sandd({"sandbox.granularity": "grain"}, driver="docker").start()
        tmp = tempfile.mkdtemp(prefix="sand-bundles-")
        try:
            s.deploy(write_bundle(tmp + "/pg", {"app.yaml": GRAIN_APP, "g.py": GRAIN_CODE}))
            r = s.request("POST", "/v1/apps/pergrain/workflows/w", {})
            self.assertEqual(r.status, 200, r.body)
            self.assertTrue(r.json()["ok"])
            cs = containers({"sand.app": "pergrain", "sand.data_dir": s.data_dir})
            self.assertEqual(sorted(c["Labels"]["sand.grains"] for c in cs), ["a", "b"])
        finally:
            s.stop()
        self.assertEqual(containers({"sand.data_dir": s.data_dir}), [])


LAT_APP = """
app: lat
grains:
  echo: {runtime: python, code: g.py, handler: echo}
workflows:
  w:
    start: a
    steps:
      a: {grain: echo}
"""


class DockerLatency(unittest.TestCase):
    """Per-event latency next to the process driver: printed, not asserted."""

    def measure(self, driver, n=150):
        s = Sandd(driver=driver).start()
        tmp = tempfile.mkdtemp(prefix="sand-bundles-")
        try:
            t0 = time.time()
            s.deploy(write_bundle(tmp + "/lat", {"app.yaml": LAT_APP,
                                                 "g.py": "def echo(e, c):\n    return e\n"}))
            r = s.request("POST", "/v1/apps/lat/workflows/w", {"i": -1})
            first = time.time() - t0
            self.assertEqual(r.json(), {"i": -1})
            lat = []
            for i in range(n):
                t = time.perf_counter()
                r = s.request("POST", "/v1/apps/lat/workflows/w", {"i": i})
                lat.append(time.perf_counter() - t)
                self.assertEqual(r.json(), {"i": i})
            return first, statistics.median(lat), sorted(lat)[int(n * 0.95)]
        finally:
            s.stop()

    def test_latency_vs_process(self):
        proc = self.measure("process")
        dock = self.measure("docker")
        print("\n[latency] deploy->first result: process %.3f s, docker %.3f s" % (proc[0], dock[0]))
        print("[latency] per event median/p95: process %.2f/%.2f ms, docker %.2f/%.2f ms "
              "(docker/process median %.2f)" % (proc[1] * 1e3, proc[2] * 1e3, dock[1] * 1e3,
                                                dock[2] * 1e3, dock[1] / proc[1]))


class DockerMissingImage(unittest.TestCase):
    def test_missing_image_fails_the_app_with_the_reason(self):
        s = Sandd({"sandbox.image": "sand-test-missing:0"}, driver="docker").start()
        tmp = tempfile.mkdtemp(prefix="sand-bundles-")
        try:
            d = write_bundle(tmp + "/lat", {"app.yaml": LAT_APP, "g.py": "def echo(e, c):\n    return e\n"})
            import io
            import tarfile
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as t:
                for name in sorted(os.listdir(d)):
                    t.add(os.path.join(d, name), arcname=name)
            r = s.request("POST", "/v1/apps", buf.getvalue(), headers={"Content-Type": "application/gzip"})
            self.assertIn(r.status, (200, 201), r.body)
            deadline = time.time() + 30
            desc = {}
            while time.time() < deadline:
                desc = s.request("GET", "/v1/apps/lat").json()
                if desc["state"] == "failed":
                    break
                time.sleep(0.1)
            self.assertEqual(desc["state"], "failed", desc)
            self.assertIn("sand-test-missing:0", desc.get("failure", ""))
            self.assertIn("does not exist", desc.get("failure", ""))
            # sandd itself keeps serving
            self.assertEqual(s.request("GET", "/healthz", auth=False).status, 200)
        finally:
            s.stop()


class DockerSanddRestart(unittest.TestCase):
    def test_kill9_sandd_adopts_its_container(self):
        s = Sandd(driver="docker").start()
        tmp = tempfile.mkdtemp(prefix="sand-bundles-")
        try:
            s.deploy(write_bundle(tmp + "/rec", {"app.yaml": PROBE_APP % {"app": "rec"},
                                                 "g.py": PROBE_CODE, "marker.txt": "x"}))
            cid = sandbox_id(s, "rec")
            ids = [s.request("POST", "/v1/apps/rec/workflows/w?async=1", {"i": i}).json()[
                "execution_id"] for i in range(10)]
            time.sleep(0.3)
            s.kill9()
            # the container outlives sandd ...
            self.assertEqual(docker("GET", "/containers/%s/json" % cid)[1]["State"]["Status"],
                             "running")
            s.start()
            for i, eid in enumerate(ids):
                ex = s.wait_execution(eid, timeout=60)
                self.assertEqual(ex["status"], "succeeded", ex)
                self.assertEqual(ex["output"], {"i": i, "done": True})
            # ... and the restarted sandd adopts it instead of starting another one
            desc = s.request("GET", "/v1/apps/rec").json()
            self.assertEqual(desc["sandbox"]["id"], cid)
            self.assertEqual(len(containers({"sand.data_dir": s.data_dir})), 1)
        finally:
            s.stop()
        self.assertEqual(containers({"sand.data_dir": s.data_dir}), [])


if __name__ == "__main__":
    unittest.main()


import test_cold  # noqa: E402  (a module attribute, so its process-driver class is not run twice)


class DockerColdMode(test_cold.ColdMode):
    """The cold-start baseline with Docker: a fresh container for every event."""
    driver = "docker"
