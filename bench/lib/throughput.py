"""Figure "throughput": requests/s and latency under load for a 1-grain (bench/apps/one) and a
3-grain (bench/apps/three) Python workflow, with wrk at 1 and 50 keep-alive connections, plus
the latency of N sequential blocking invocations from one Python keep-alive client (every
sample kept) for the 1-grain workflow.

  throughput.py run URL KEY LUA DURATION N OUT.json
  throughput.py report OUT.json
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

WORKFLOWS = [("1-grain", "bench-one", "one"), ("3-grain", "bench-three", "three")]


def wrk(url, key, lua, path, conns, duration):
    env = dict(os.environ, SAND_API_KEY=key, SAND_BENCH_PATH=path)
    threads = 1 if conns == 1 else 2
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout", "10s",
           "-s", lua, url]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            r["requests_per_s"] = r["requests"] / (r["duration_us"] / 1e6)
            r["command"] = " ".join(cmd)
            return r
    raise RuntimeError("wrk printed no result:\n" + out)


def run(url, key, lua, duration, n, out):
    client = benchlib.Sand(url, key)
    res = {"wrk": [], "client": {}}
    for label, app, wf in WORKFLOWS:
        for _ in range(200):
            client.invoke(app, wf, {"n": 1})
    samples = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        st, _, _ = client.invoke("bench-one", "one", {"n": 1, "pad": "x" * 32})
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
        if st != 200:
            raise RuntimeError(f"invoke: {st}")
    res["client"] = {"workflow": "1-grain", "samples_us": samples, **benchlib.summary(samples)}
    for label, app, wf in WORKFLOWS:
        path = f"/v1/apps/{app}/workflows/{wf}"
        for conns in (1, 50):
            wrk(url, key, lua, path, conns, 2)  # warm-up
            r = wrk(url, key, lua, path, conns, duration)
            r.update({"workflow": label, "connections": conns})
            res["wrk"].append(r)
    with open(out, "w") as f:
        json.dump(res, f)


def report(path):
    with open(path) as f:
        res = json.load(f)
    rows = []
    for r in res["wrk"]:
        p = r["latency_us"]["percentiles"]
        errs = sum(r["errors"].values())
        rows.append([r["workflow"], r["connections"], r["requests"], round(r["requests_per_s"]),
                     p["50"] / 1000, p["90"] / 1000, p["99"] / 1000, errs])
    c = res["client"]
    text = benchlib.table(["workflow", "connections", "requests", "req/s", "p50 ms", "p90 ms",
                           "p99 ms", "errors"], rows)
    text += ("\n\nOne Python keep-alive client, 1-grain workflow, %d sequential blocking "
             "invocations: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, mean %.3f ms.\n"
             % (c["n"], c["p50"] / 1000, c["p90"] / 1000, c["p99"] / 1000, c["mean"] / 1000))
    text += "\n- wrk: `" + res["wrk"][0]["command"].replace(res["wrk"][0]["command"].split()[-1], "URL") + "` (and -t 2 -c 50); errors = connect + read + write + timeout + non-2xx."
    benchlib.write_table("throughput", "throughput: wrk against blocking workflow invocations", text)
    benchlib.write_result("throughput", {"unit": "us", **res})

    plt = benchlib.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    labels = [f"{r['workflow']}\nc={r['connections']}" for r in res["wrk"]]
    axes[0].bar(labels, [r["requests_per_s"] for r in res["wrk"]])
    axes[0].set_ylabel("requests/s")
    axes[0].set_title("Throughput (wrk)")
    for r in res["wrk"]:
        ps = r["latency_us"]["percentiles"]
        keys = sorted(ps, key=float)
        axes[1].plot([float(k) / 100 for k in keys], [ps[k] / 1000 for k in keys], marker=".",
                     label=f"{r['workflow']} c={r['connections']}")
    axes[1].set_xscale("logit")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("percentile")
    axes[1].set_ylabel("latency (ms, log)")
    axes[1].set_title("Latency distribution")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(benchlib.plot_path("throughput"), dpi=110)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    else:
        report(sys.argv[2])
