"""The data layer and application logs end to end (issue: data layer, logs): binary-safe values
of 0 B, 1 B and 64 MiB in local and global scope from Python and C grains, oversized values
refused, isolation between apps' keys through their Redis ACL users, log lines in order with their
execution ids, `follow` streaming, and a grain printing without bound not hurting sandd."""

import json
import os
import socket
import subprocess
import threading
import time
import unittest

from harness import BIN, SanddTestCase, write_bundle

DATA_APP = """
app: data
grains:
  py: {runtime: python, code: d.py, timeout: 120s}
  c: {runtime: c, code: d.c, handler: handle, timeout: 120s}
  j: {runtime: java, code: java, handler: dl.Values, timeout: 120s, jvm_options: -Xmx512m}
  chatty: {runtime: python, code: d.py, handler: chatty, timeout: 120s}
  spy: {runtime: python, code: d.py, handler: spy}
"""

PY = r'''
import hashlib, os, socket, sys

def handle(event, context):
    n, scope = event["n"], event["scope"]
    value = bytes((i * 7 + 3) % 256 for i in range(min(n, 256))) * (n // 256 + 1)
    value = value[:n]
    key = "k-%d-%s" % (n, scope)
    context.put(key, value, scope=scope)
    got = context.get(key, scope=scope)
    ok = got == value
    context.delete(key, scope=scope)
    gone = context.get(key, scope=scope) is None
    return {"ok": ok, "gone": gone, "len": len(got), "sha": hashlib.sha256(got).hexdigest()}

def chatty(event, context):
    for i in range(event["lines"]):
        print("line %d" % i, flush=False)
    context.log("done after %d lines", event["lines"])
    if event.get("flood"):
        sys.stdout.write("x" * (100 * 1024 * 1024))
    return {"ok": True}

def spy(event, context):
    """Speaks raw RESP to the app's Redis with this app's credentials and tries another app's keys."""
    path = os.environ["SAND_REDIS"][len("unix:"):]
    user, pw = os.environ["SAND_REDIS_USER"], os.environ["SAND_REDIS_PASS"]
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    def cmd(*args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        return s.recv(65536).decode(errors="replace")
    res = {"auth": cmd("AUTH", user, pw)}
    res["own"] = cmd("SET", "sand:data:dl:mine", "1")
    res["other_get"] = cmd("GET", "sand:victim:dl:secret")
    res["other_queue"] = cmd("XADD", "sand:victim:q:g", "*", "e", "{}")
    res["keys"] = cmd("KEYS", "*")
    res["config"] = cmd("CONFIG", "GET", "requirepass")
    return res
'''

C = r'''
#include <sand/grain.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* event: {"n": N, "scope": "local"|"global"} parsed by hand (the grain needs no JSON library) */
int handle(const sand_event *in, sand_context *ctx, sand_buf *out)
{
    long n = 0;
    const char *p = strstr(in->data, "\"n\":");
    if (p)
        n = strtol(p + 4, NULL, 10);
    int scope = strstr(in->data, "global") ? SAND_SCOPE_GLOBAL : SAND_SCOPE_LOCAL;
    char *v = malloc(n ? (size_t)n : 1);
    for (long i = 0; i < n; i++)
        v[i] = (char)((i * 7 + 3) % 256);
    if (sand_ctx_put(ctx, "ckey", v, (size_t)n, scope) != 0) {
        sand_ctx_error(ctx, "put failed");
        return 1;
    }
    void *got = NULL;
    size_t len = 0;
    if (sand_ctx_get(ctx, "ckey", &got, &len, scope) != 0) {
        sand_ctx_error(ctx, "get failed");
        return 1;
    }
    int ok = len == (size_t)n && (n == 0 || memcmp(got, v, (size_t)n) == 0);
    free(got);
    free(v);
    sand_ctx_delete(ctx, "ckey", scope);
    char buf[64];
    int m = snprintf(buf, sizeof(buf), "{\"ok\":%s,\"len\":%zu}", ok ? "true" : "false", len);
    return sand_buf_append(out, buf, (size_t)m);
}
'''

JAVA = r'''
package dl;

import java.util.Arrays;

public final class Values implements sand.Grain {
    public String handle(String eventJson, sand.Context ctx) throws Exception {
        int n = Integer.parseInt(eventJson.replaceAll(".*\"n\":\\s*(\\d+).*", "$1"));
        String scope = eventJson.contains("global") ? sand.Context.GLOBAL : sand.Context.LOCAL;
        byte[] v = new byte[n];
        for (int i = 0; i < n; i++)
            v[i] = (byte) ((i * 7 + 3) % 256);
        ctx.put("jkey", v, scope);
        byte[] got = ctx.get("jkey", scope);
        boolean ok = got != null && Arrays.equals(got, v);
        ctx.delete("jkey", scope);
        boolean gone = ctx.get("jkey", scope) == null;
        return "{\"ok\":" + ok + ",\"gone\":" + gone + ",\"len\":" + (got == null ? -1 : got.length) + "}";
    }
}
'''

VICTIM = """
app: victim
grains:
  g: {runtime: python, code: v.py}
"""


class DataAndLogs(SanddTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = write_bundle(cls.tmp + "/data", {"app.yaml": DATA_APP, "d.py": PY, "d.c": C,
                                             "src/dl/Values.java": JAVA})
        os.makedirs(d + "/java")
        subprocess.run(["javac", "--release", "17", "-cp", os.path.join(BIN, "..", "lib", "sand.jar"),
                        "-d", d + "/java", d + "/src/dl/Values.java"], check=True)
        cls.sandd.deploy(d)
        cls.sandd.deploy(write_bundle(cls.tmp + "/victim", {"app.yaml": VICTIM,
                                                            "v.py": "def handle(e, c):\n    c.put('secret', b'x')\n    return {}\n"}))

    def grain(self, name, event, expect=200, timeout=180):
        r = self.sandd.request("POST", "/v1/apps/data/grains/" + name, event, timeout=timeout)
        self.assertEqual(r.status, expect, r.body[:500])
        return r

    def test_python_values(self):
        import hashlib
        for scope in ("local", "global"):
            for n in (0, 1, 64 * 1024 * 1024):
                out = self.grain("py", {"n": n, "scope": scope}).json()
                self.assertTrue(out["ok"], (n, scope))
                self.assertTrue(out["gone"], (n, scope))
                self.assertEqual(out["len"], n)

    def test_c_values(self):
        for scope in ("local", "global"):
            for n in (0, 1, 64 * 1024 * 1024):
                self.assertEqual(self.grain("c", {"n": n, "scope": scope}).json(), {"ok": True, "len": n})

    def test_java_values(self):
        for scope in ("local", "global"):
            for n in (0, 1, 64 * 1024 * 1024):
                self.assertEqual(self.grain("j", {"n": n, "scope": scope}).json(),
                                 {"ok": True, "gone": True, "len": n}, (n, scope))

    def test_oversized_value_refused(self):
        err = self.grain("py", {"n": 64 * 1024 * 1024 + 1, "scope": "local"}, expect=502).json()["error"]
        self.assertEqual(err["type"], "ValueError")

    def test_acl_isolation(self):
        self.sandd.request("POST", "/v1/apps/victim/grains/g", {})
        out = self.grain("spy", {}).json()
        self.assertTrue(out["auth"].startswith("+OK"), out)
        self.assertTrue(out["own"].startswith("+OK"), out)
        for k in ("other_get", "other_queue", "keys", "config"):
            self.assertIn("NOPERM", out[k], (k, out))

    def logs(self, *query):
        r = self.sandd.request("GET", "/v1/apps/data/logs" + ("?" + "&".join(query) if query else ""))
        self.assertEqual(r.status, 200)
        return [json.loads(line) for line in r.body.decode().splitlines() if line]

    def test_logs_in_order_with_ids(self):
        since = int(time.time() * 1e6)
        r = self.grain("chatty", {"lines": 50})
        eid = r.headers["X-Sand-Execution-Id"]
        lines = [l for l in self.logs("since=%d" % since, "grain=chatty") if l["execution_id"] == eid]
        out = [l["message"] for l in lines if l["kind"] == "stdout"]
        self.assertEqual(out, ["line %d" % i for i in range(50)])
        self.assertIn("done after 50 lines", [l["message"] for l in lines if l["kind"] == "log"])
        self.assertTrue(all(l["grain"] == "chatty" for l in lines))
        times = [l["time_us"] for l in lines]
        self.assertEqual(times, sorted(times))
        rc, text, err = self.sandd.sandctl("logs", "data", "--grain", "chatty")
        self.assertEqual(rc, 0, err)
        self.assertIn("line 49", text)

    def test_follow_streams_new_lines(self):
        s = socket.create_connection(("127.0.0.1", self.sandd.port), timeout=20)
        s.sendall(("GET /v1/apps/data/logs?follow=1&since=%d&grain=chatty HTTP/1.1\r\nHost: x\r\n"
                   "Authorization: Bearer %s\r\n\r\n" % (int(time.time() * 1e6), self.sandd.key)).encode())
        got = b""
        threading.Timer(0.5, lambda: self.grain("chatty", {"lines": 3})).start()
        deadline = time.time() + 15
        while b"done after 3 lines" not in got and time.time() < deadline:
            got += s.recv(65536)
        s.close()
        self.assertIn(b"line 2", got)
        self.assertIn(b"done after 3 lines", got)

    def test_flood_does_not_hurt(self):
        r = self.grain("chatty", {"lines": 1, "flood": True})
        self.assertEqual(r.json(), {"ok": True})
        lines = self.logs("grain=chatty")
        self.assertTrue(any("truncated" in l["message"] for l in lines), lines[-3:])
        total = sum(len(l["message"]) for l in lines)
        self.assertLess(total, 20 * 1024 * 1024)
        self.assertEqual(self.sandd.request("GET", "/healthz", auth=False).status, 200)


if __name__ == "__main__":
    unittest.main()
