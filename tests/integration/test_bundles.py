"""Deploying: hostile and invalid bundles are rejected whole with 400 and change nothing that was
deployed; redeploying replaces an app without losing its queued events; rm removes everything;
sandctl validate/deploy exit codes."""

import io
import json
import os
import tarfile
import unittest

from harness import SRC, SanddTestCase, write_bundle

GOOD = """
app: keep
grains:
  g: {runtime: python, code: g.py}
workflows:
  w:
    start: g
    steps:
      g: {}
"""
CODE_V1 = "def handle(event, context):\n    return {'version': 1}\n"
CODE_V2 = "def handle(event, context):\n    return {'version': 2}\n"


def tgz(entries):
    """entries: list of (TarInfo, bytes-or-None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for info, data in entries:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_entry(name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name, kind, **kw):
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info, None


APP_FILES = [file_entry("app.yaml", GOOD.replace("keep", "evil").encode()),
             file_entry("g.py", CODE_V1.encode())]


class BundleTests(SanddTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.good = write_bundle(cls.tmp + "/keep", {"app.yaml": GOOD, "g.py": CODE_V1})
        cls.sandd.deploy(cls.good)

    def upload(self, data):
        return self.sandd.request("POST", "/v1/apps", data, headers={"Content-Type": "application/gzip"})

    def assertRejected(self, data, fragment):
        r = self.upload(data)
        self.assertEqual(r.status, 400, r.body[:300])
        err = r.json()["error"]
        self.assertIn(fragment, err["message"])
        # nothing changed: the app list is the same and the deployed app still answers
        apps = [a["app"] for a in self.sandd.request("GET", "/v1/apps").json()["apps"]]
        self.assertEqual(apps, ["keep"])
        r = self.sandd.request("POST", "/v1/apps/keep/workflows/w", {})
        self.assertEqual(r.status, 200, r.body)
        return err

    def test_absolute_path(self):
        self.assertRejected(tgz(APP_FILES + [file_entry("/etc/evil", b"x")]), "/etc/evil")

    def test_dotdot(self):
        self.assertRejected(tgz(APP_FILES + [file_entry("a/../../x", b"x")]), "..")

    def test_symlink_out(self):
        self.assertRejected(tgz(APP_FILES + [special("l", tarfile.SYMTYPE, linkname="/etc/passwd")]), "l")
        self.assertRejected(tgz(APP_FILES + [special("d/l", tarfile.SYMTYPE, linkname="../../x")]), "d/l")

    def test_hardlink_device_fifo(self):
        self.assertRejected(tgz(APP_FILES + [special("h", tarfile.LNKTYPE, linkname="g.py")]), "h")
        self.assertRejected(tgz(APP_FILES + [special("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]), "dev")
        self.assertRejected(tgz(APP_FILES + [special("p", tarfile.FIFOTYPE)]), "p")

    def test_too_many_files(self):
        entries = APP_FILES + [file_entry("f/%d" % i, b"") for i in range(10001)]
        self.assertRejected(tgz(entries), "files")

    def test_huge_declared_size(self):
        info = tarfile.TarInfo("big")
        info.size = 1 << 30
        raw = io.BytesIO()
        t = tarfile.open(fileobj=raw, mode="w")
        for i, d in APP_FILES:
            t.addfile(i, io.BytesIO(d))
        end = t.offset  # where the end-of-archive blocks would start
        t.close()
        import gzip
        data = gzip.compress(raw.getvalue()[:end] + info.tobuf() + b"x" * 65536)
        self.assertRejected(data, "big")

    def test_not_gzip(self):
        self.assertRejected(b"this is not a bundle", "")

    def test_invalid_yaml_reports_line(self):
        bad = "app: evil\ngrains:\n  g: {runtime: rust, code: g.py}\n"
        err = self.assertRejected(tgz([file_entry("app.yaml", bad.encode()),
                                       file_entry("g.py", b"")]), "runtime")
        self.assertEqual(err["file"], "app.yaml")
        self.assertEqual(err["line"], 3)

    def test_missing_app_yaml(self):
        self.assertRejected(tgz([file_entry("g.py", b"")]), "app.yaml")

    def test_redeploy_and_rm(self):
        d2 = write_bundle(self.tmp + "/keep2", {"app.yaml": GOOD.replace("keep", "temp"), "g.py": CODE_V1})
        self.sandd.deploy(d2)
        r = self.sandd.request("POST", "/v1/apps/temp/workflows/w", {})
        self.assertEqual(r.json(), {"version": 1})
        # queue events, redeploy a new version: the queued events are served by the new version
        ids = [self.sandd.request("POST", "/v1/apps/temp/workflows/w?async=1", {}).json()["execution_id"]
               for _ in range(20)]
        with open(os.path.join(d2, "g.py"), "w") as f:
            f.write(CODE_V2)
        self.sandd.deploy(d2)
        for eid in ids:
            ex = self.sandd.wait_execution(eid)
            self.assertEqual(ex["status"], "succeeded", ex)
        self.assertEqual(self.sandd.request("POST", "/v1/apps/temp/workflows/w", {}).json(), {"version": 2})
        desc = self.sandd.request("GET", "/v1/apps/temp").json()
        self.assertEqual(desc["version"], 2)
        rc, out, err = self.sandd.sandctl("rm", "temp")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.sandd.request("GET", "/v1/apps/temp").status, 404)
        self.assertEqual(self.sandd.request("POST", "/v1/apps/temp/workflows/w", {}).status, 404)
        rc, out, err = self.sandd.sandctl("rm", "temp")
        self.assertEqual(rc, 1)

    def test_sandctl_validate(self):
        rc, out, err = self.sandd.sandctl("validate", os.path.join(SRC, "examples", "image-pipeline"))
        self.assertEqual(rc, 0, err)
        bad = write_bundle(self.tmp + "/bad", {"app.yaml": "app: x\ngrains:\n  g: {runtime: python, code: nope.py}\n"})
        rc, out, err = self.sandd.sandctl("validate", bad)
        self.assertEqual(rc, 2)
        self.assertIn("app.yaml:3:", err)
        rc, out, err = self.sandd.sandctl("deploy", bad)
        self.assertEqual(rc, 2)

    def test_sandctl_auth_and_unreachable(self):
        rc, out, err = self.sandd.sandctl("ls", key=False)
        # no key in the environment: the local key file of another data dir is not ours
        self.assertIn(rc, (0, 3))
        env_rc = self.sandd.sandctl("--key", "wrong", "ls")[0]
        self.assertEqual(env_rc, 3)
        rc = self.sandd.sandctl("--server", "http://127.0.0.1:1", "ls")[0]
        self.assertEqual(rc, 3)


if __name__ == "__main__":
    unittest.main()
