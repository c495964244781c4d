"""The shipped examples run end to end with exact results: the image pipeline (Python, data passed
by reference, fan-out and join), polyglot (Python -> Java -> C, the C grain compiled at deploy),
and mapreduce (fan-out/join word count through the data layer)."""

import os
import shutil
import subprocess
import unittest

from harness import BIN, SRC, SanddTestCase


class Examples(SanddTestCase):
    def example(self, name):
        dst = os.path.join(self.tmp, name)
        shutil.copytree(os.path.join(SRC, "examples", name), dst,
                        ignore=shutil.ignore_patterns("*.class"))
        return dst

    def test_image_pipeline(self):
        self.sandd.deploy(self.example("image-pipeline"))
        r = self.sandd.request("POST", "/v1/apps/image-pipeline/workflows/process", {"image": "sample.jpg"})
        self.assertEqual(r.status, 200, r.body)
        out = r.json()
        self.assertEqual(out["metadata"]["width"], 640)
        self.assertEqual(out["metadata"]["height"], 480)
        self.assertEqual(out["thumbnail"]["width"], 128)
        ex = self.sandd.request("GET", "/v1/executions/" + r.headers["X-Sand-Execution-Id"]).json()
        self.assertEqual(sorted(s["step"] for s in ex["steps"]),
                         ["collect", "extract", "store", "thumbnail", "transform"])

    def test_polyglot(self):
        d = self.example("polyglot")
        jar = os.path.join(BIN, "..", "lib", "sand.jar")
        subprocess.run(["javac", "--release", "17", "-cp", jar, "-d", os.path.join(d, "grains", "shout"),
                        os.path.join(d, "grains", "shout", "example", "Shout.java")], check=True)
        self.sandd.deploy(d)
        r = self.sandd.request("POST", "/v1/apps/polyglot/workflows/trip", {"text": "hello sand"})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"text": "HELLO SAND", "words": 2, "path": ["python", "java", "c"]})

    def test_mapreduce(self):
        self.sandd.deploy(self.example("mapreduce"))
        r = self.sandd.request("POST", "/v1/apps/mapreduce/workflows/wordcount", {})
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json(), {"words": 23, "distinct": 12,
                                    "top": [["the", 4], ["dog", 3], ["fox", 3], ["a", 2], ["and", 2]]})


if __name__ == "__main__":
    unittest.main()
