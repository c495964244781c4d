"""Integration-test harness: starts a real sandd (with its embedded redis-server and Kafka) in a
private data directory on a free port, and talks to it over HTTP or through sandctl, exactly as a
user does. Standard library only (Debian's /usr/bin/python3)."""

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import unittest
import urllib.error
import urllib.request

BIN = os.environ.get("SAND_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin"))
SRC = os.environ.get("SAND_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Sandd:
    """One sandd process with its own data dir. config: extra sandd.yaml keys (dotted)."""

    def __init__(self, config=None, driver="process", data_dir=None):
        self.port = free_port()
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="sand-it-")
        self.config = {"sandbox.driver": driver, "listen": "127.0.0.1:%d" % self.port,
                       "data_dir": self.data_dir, "log_level": "info"}
        self.config.update(config or {})
        self.proc = None
        self.url = "http://127.0.0.1:%d" % self.port

    def write_config(self):
        path = os.path.join(self.data_dir, "sandd.yaml")
        with open(path, "w") as f:
            for k, v in self.config.items():
                f.write("%s: %s\n" % (k, json.dumps(v) if isinstance(v, str) else v))
        return path

    def start(self, timeout=30):
        cfg = self.write_config()
        self.log = open(os.path.join(self.data_dir, "sandd.test.log"), "ab")
        self.proc = subprocess.Popen([os.path.join(BIN, "sandd"), "-c", cfg, "--foreground"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sandd exited with %d:\n%s" % (self.proc.returncode, self.logtext()))
            try:
                r = self.request("GET", "/healthz", auth=False)
                if r.status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("sandd did not become healthy:\n" + self.logtext())
        with open(os.path.join(self.data_dir, "api.key")) as f:
            self.key = f.read().strip()
        return self

    def logtext(self):
        try:
            with open(os.path.join(self.data_dir, "sandd.test.log"), "rb") as f:
                return f.read().decode(errors="replace")[-6000:]
        except OSError:
            return ""

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self, cleanup=True):
        """SIGTERM sandd, then stop the embedded services and sandboxes it left running."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if cleanup:
            subprocess.run([os.path.join(BIN, "sandd"), "--data-dir", self.data_dir, "--shutdown-all"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            if self.own_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def request(self, method, path, body=None, headers=None, auth=True, timeout=60):
        h = dict(headers or {})
        if auth:
            h.setdefault("Authorization", "Bearer " + self.key)
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def sandctl(self, *args, input=None, timeout=120, key=True):
        env = dict(os.environ, SAND_SERVER=self.url)
        if key:
            env["SAND_API_KEY"] = self.key
        p = subprocess.run([os.path.join(BIN, "sandctl")] + list(args), input=input,
                           capture_output=True, timeout=timeout, env=env)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def deploy(self, bundle_dir, timeout=60):
        """Uploads bundle_dir as a tar.gz (as sandctl deploy does) and waits until it is ready."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for name in sorted(os.listdir(bundle_dir)):
                t.add(os.path.join(bundle_dir, name), arcname=name)
        r = self.request("POST", "/v1/apps", buf.getvalue(), headers={"Content-Type": "application/gzip"})
        if r.status not in (200, 201):
            raise AssertionError("deploy %s: %d %s\n%s" % (bundle_dir, r.status, r.body, self.logtext()))
        app = r.json()["app"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = self.request("GET", "/v1/apps/" + app).json()
            if d["state"] == "ready":
                return d
            if d["state"] == "failed":
                break
            time.sleep(0.05)
        raise AssertionError("app %s did not become ready:\n%s" % (app, self.logtext()))

    def wait_execution(self, exec_id, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.request("GET", "/v1/executions/" + exec_id)
            if r.status == 200 and r.json()["status"] != "running":
                return r.json()
            time.sleep(0.05)
        raise AssertionError("execution %s did not finish" % exec_id)


def write_bundle(root, files):
    """Creates a bundle directory from {relative path: text}."""
    os.makedirs(root, exist_ok=True)
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return root


class SanddTestCase(unittest.TestCase):
    """A test class sharing one sandd across its tests (started in setUpClass)."""
    config = None
    driver = "process"

    @classmethod
    def setUpClass(cls):
        cls.sandd = Sandd(cls.config, driver=os.environ.get("SAND_TEST_DRIVER", cls.driver)).start()
        cls.tmp = tempfile.mkdtemp(prefix="sand-bundles-")

    @classmethod
    def tearDownClass(cls):
        cls.sandd.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def bundle(self, name, files):
        return write_bundle(os.path.join(self.tmp, name), files)
