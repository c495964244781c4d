"""Writes bench/results/REPORT.md from the figures' results (NAME.md tables, NAME.png plots,
NAME.json numbers), with the performance targets of the data path checked against them."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

FIGURES = ["startup", "bus", "interaction", "memory", "pipeline", "throughput"]


def load(name):
    p = os.path.join(benchlib.results_dir(), name + ".json")
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def targets():
    rows = []
    inter, tput, mem = load("interaction"), load("throughput"), load("memory")
    if inter:
        for m in inter["modes"]:
            if m["mode"] == "sand":
                h = m["warm"]["hop_us"]
                rows.append(["Python grain->grain hop p50 (p99)", f"{h['n']} warm hops",
                             f"{h['p50'] / 1000:.3f} ms ({h['p99'] / 1000:.3f} ms)", "p50 <= 1 ms",
                             "met" if h["p50"] <= 1000 else "missed"])
    if tput:
        c1 = [r for r in tput["wrk"] if r["workflow"] == "1-grain" and r["connections"] == 1]
        c50 = [r for r in tput["wrk"] if r["workflow"] == "1-grain" and r["connections"] == 50]
        if c1:
            p = c1[0]["latency_us"]["percentiles"]
            rows.append(["1-grain workflow, HTTP keep-alive, 1 client (wrk -c1) p50 (p99)",
                         f"{c1[0]['requests']} requests",
                         f"{p['50'] / 1000:.3f} ms ({p['99'] / 1000:.3f} ms)", "p50 <= 1 ms",
                         "met" if p["50"] <= 1000 else "missed"])
        c = tput["client"]
        rows.append(["1-grain workflow, 1 Python keep-alive client p50 (p99)",
                     f"{c['n']} requests", f"{c['p50'] / 1000:.3f} ms ({c['p99'] / 1000:.3f} ms)",
                     "p50 <= 1 ms", "met" if c["p50"] <= 1000 else "missed"])
        if c50:
            rows.append(["1-grain workflow, wrk 50 connections", f"{c50[0]['requests']} requests",
                         f"{c50[0]['requests_per_s']:.0f} req/s", ">= 2500 req/s",
                         "met" if c50[0]["requests_per_s"] >= 2500 else "missed"])
    if mem:
        for m in mem["modes"]:
            if m["mode"] == "fork":
                lv = [x for x in m["levels"] if x["n"] == 50]
                if lv:
                    inst = lv[0]["instance_private_dirty_kb"]["mean"] / 1024
                    grow = lv[0]["growth_private_dirty_kb_per_exec"] / 1024
                    rows.append(["private memory per concurrent instance, 50 instances",
                                 "Private_Dirty",
                                 f"{inst:.3f} MB per instance ({grow:.3f} MB sandbox growth per execution)",
                                 "<= 0.6 MB", "met" if max(inst, grow) <= 0.6 else "missed"])
    return benchlib.table(["target", "over", "measured", "target", "status"], rows)


def main():
    d = benchlib.results_dir()
    m = benchlib.machine()
    out = ["# sand benchmarks: the SAND paper's evaluation, reproduced", "",
           f"Machine: {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, "
           f"{m['memory_mb']} MB. Produced by `bench/run-all`; raw samples in "
           "`bench/results/NAME.json` (each with the load average when it was written: the "
           "machine may be shared, and the figures move with its load).", "", "## Targets (issue 3)", "", targets(), ""]
    for name in FIGURES:
        md = os.path.join(d, name + ".md")
        if not os.path.exists(md):
            out += [f"## {name}", "", "not run (see the output of `bench/run-all`)", ""]
            continue
        with open(md) as f:
            out.append(f.read().rstrip())
        out.append("")
        if os.path.exists(os.path.join(d, name + ".png")):
            out += [f"![{name}]({name}.png)", ""]
    with open(os.path.join(d, "REPORT.md"), "w") as f:
        f.write("\n".join(out))
    print("\n".join(out[:8]))


if __name__ == "__main__":
    main()
