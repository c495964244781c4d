"""Every bad HTTP input of SPEC section 5 gets its status code and a JSON error, and sandd stays
healthy: auth, unknown names, wrong methods, oversized and malformed bodies, deep JSON, framing
errors on a raw socket, and clients that vanish mid-request."""

import json
import socket
import unittest

from harness import SanddTestCase, write_bundle

APP = """
app: echo
grains:
  echo: {runtime: python, code: g.py}
  sleepy: {runtime: python, code: g.py, handler: sleepy}
workflows:
  main:
    start: echo
    steps:
      echo: {}
  nap:
    start: sleepy
    steps:
      sleepy: {}
"""
CODE = """
import time
def handle(event, context):
    return event
def sleepy(event, context):
    time.sleep(0.5)
    return {"slept": True}
"""


class HttpTests(SanddTestCase):
    config = {"limits.invoke_body": "64Ki"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.sandd.deploy(write_bundle(cls.tmp + "/echo", {"app.yaml": APP, "g.py": CODE}))

    def assertError(self, r, status, code=None):
        self.assertEqual(r.status, status, r.body)
        body = r.json()
        self.assertIn("error", body)
        self.assertIn("message", body["error"])
        if code:
            self.assertEqual(body["error"]["code"], code)

    def raw(self, data, read=True):
        s = socket.create_connection(("127.0.0.1", self.sandd.port), timeout=10)
        s.sendall(data)
        out = b""
        if read:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        s.close()
        return out

    def tearDown(self):
        # whatever a test did, the daemon is still healthy and serving
        self.assertEqual(self.sandd.request("GET", "/healthz", auth=False).status, 200)

    def test_echo_roundtrip(self):
        ev = {"a": [1, 2, {"b": "ü"}], "n": None}
        r = self.sandd.request("POST", "/v1/apps/echo/workflows/main", ev)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), ev)
        self.assertTrue(r.headers["X-Sand-Execution-Id"])

    def test_auth(self):
        r = self.sandd.request("GET", "/v1/apps", auth=False)
        self.assertEqual(r.status, 401)
        r = self.sandd.request("GET", "/v1/apps", headers={"Authorization": "Bearer nope"}, auth=False)
        self.assertEqual(r.status, 401)
        self.assertNotIn(b"echo", r.body)
        r = self.sandd.request("POST", "/v1/apps/echo/workflows/main", {}, auth=False)
        self.assertEqual(r.status, 401)
        # unknown paths do not reveal anything without a key either
        r = self.sandd.request("GET", "/v1/nothing", auth=False)
        self.assertEqual(r.status, 401)
        self.assertEqual(self.sandd.request("GET", "/healthz", auth=False).body, b"ok\n")

    def test_unknown_names(self):
        self.assertError(self.sandd.request("POST", "/v1/apps/nope/workflows/main", {}), 404, "not_found")
        self.assertError(self.sandd.request("POST", "/v1/apps/echo/workflows/nope", {}), 404, "not_found")
        self.assertError(self.sandd.request("POST", "/v1/apps/echo/grains/nope", {}), 404, "not_found")
        self.assertError(self.sandd.request("GET", "/v1/apps/nope"), 404)
        self.assertError(self.sandd.request("GET", "/v1/executions/0123456789abcdef"), 404)
        self.assertError(self.sandd.request("GET", "/v1/executions/not-an-id"), 404)
        self.assertError(self.sandd.request("GET", "/v1/whatever"), 404)

    def test_wrong_method(self):
        self.assertError(self.sandd.request("PUT", "/v1/apps"), 405)
        self.assertError(self.sandd.request("GET", "/v1/apps/echo/workflows/main"), 405)
        self.assertError(self.sandd.request("DELETE", "/v1/executions/0123"), 405)
        out = self.raw(b"FOO /v1/apps HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 405"), out[:80])

    def test_malformed_json(self):
        for body in (b"{", b"[1,2", b"{\"a\":}", b"nul", b"\xff\xfe"):
            r = self.sandd.request("POST", "/v1/apps/echo/workflows/main", body,
                                   headers={"Content-Type": "application/json"})
            self.assertError(r, 400, "invalid_json")

    def test_depth(self):
        ok = "[" * 512 + "]" * 512
        r = self.sandd.request("POST", "/v1/apps/echo/workflows/main", ok)
        self.assertEqual(r.status, 200, r.body[:200])
        deep = "[" * 513 + "]" * 513
        self.assertError(self.sandd.request("POST", "/v1/apps/echo/workflows/main", deep), 400)

    def test_body_too_large(self):
        big = json.dumps({"x": "a" * (70 * 1024)})
        self.assertError(self.sandd.request("POST", "/v1/apps/echo/workflows/main", big), 413)
        # chunked over the limit
        head = ("POST /v1/apps/echo/workflows/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                "Transfer-Encoding: chunked\r\n\r\n" % self.sandd.key).encode()
        chunk = b"a" * 60000
        body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
        out = self.raw(head + body)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out[:80])

    def test_framing_errors(self):
        auth = ("Authorization: Bearer %s\r\n" % self.sandd.key).encode()
        cases = [
            b"POST /v1/apps/echo/workflows/main HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            b"POST /v1/apps/echo/workflows/main HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            b"GET /v1/apps HTTP/1.1\r\nHost x\r\nBad Header Line\r\n\r\n",
            b"POST /v1/apps/echo/workflows/main HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ]
        for c in cases:
            out = self.raw(c)
            self.assertTrue(out.startswith(b"HTTP/1.1 400"), (c, out[:80]))
            self.assertIn(b"Connection: close", out)

    def test_keepalive_many_requests(self):
        s = socket.create_connection(("127.0.0.1", self.sandd.port), timeout=10)
        body = b'{"k":1}'
        req = (b"POST /v1/apps/echo/workflows/main HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + self.sandd.key.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        f = s.makefile("rb")
        for _ in range(20):
            s.sendall(req)
            status = f.readline()
            self.assertTrue(status.startswith(b"HTTP/1.1 200"), status)
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.assertEqual(json.loads(f.read(length)), {"k": 1})
        s.close()

    def test_client_vanishes_during_blocking_call(self):
        req = (b"POST /v1/apps/echo/workflows/nap HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
               + self.sandd.key.encode() + b"\r\nContent-Length: 2\r\n\r\n{}")
        for _ in range(5):
            self.raw(req, read=False)  # send and close at once
        r = self.sandd.request("POST", "/v1/apps/echo/workflows/nap", {})
        self.assertEqual(r.json(), {"slept": True})

    def test_metrics(self):
        self.sandd.request("POST", "/v1/apps/echo/workflows/main", {"m": 1})
        r = self.sandd.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        text = r.body.decode()
        self.assertIn('sand_invocations_total{app="echo",workflow="main"}', text)
        self.assertIn('sand_execution_seconds_bucket{app="echo",workflow="main",le="+Inf"}', text)
        self.assertIn('sand_queue_depth{app="echo",grain="echo"}', text)
        self.assertEqual(self.sandd.request("GET", "/metrics", auth=False).status, 401)


if __name__ == "__main__":
    unittest.main()
