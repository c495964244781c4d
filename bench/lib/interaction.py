"""Figure "interaction": grain-to-grain latency in a 2-grain workflow (bench/apps/hop), warm and
cold, per mode. The hop is the second step's started_us minus the first step's finished_us in
the execution record (GET /v1/executions/{id}), so it is measured by sand itself, without the
HTTP client in it.

  interaction.py run MODE URL KEY SANDCTL APPDIR WARM COLD OUT.json   one mode on a running sandd
  interaction.py report OUT.json...                                   table, results, plot

warm: WARM invocations after 50 unrecorded ones. cold: COLD times, the app is removed and
deployed again and its first invocation is measured.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

APP, WF = "bench-hop", "hop"


def one(client):
    t0 = time.perf_counter_ns()
    st, xid, body = client.invoke(APP, WF, {"n": 1, "pad": "x" * 64})
    e2e = (time.perf_counter_ns() - t0) / 1000.0
    if st != 200:
        raise RuntimeError(f"invoke: {st} {body[:300]!r}")
    rec = client.execution(xid)
    s = benchlib.steps_by_name(rec)
    f, g = s["first"], s["second"]
    return {
        "hop_us": g["started_us"] - f["finished_us"],
        "e2e_client_us": e2e,
        "exec_us": rec["finished_us"] - rec["started_us"],
        "entry_us": f["started_us"] - rec["started_us"],
        "first_run_us": f["finished_us"] - f["started_us"],
        "second_run_us": g["finished_us"] - g["started_us"],
        "tail_us": rec["finished_us"] - g["finished_us"],
        "pid1": f["pid"], "pid2": g["pid"],
    }


def run(mode, url, key, sandctl, appdir, warm, cold, out, warmup=50):
    client = benchlib.Sand(url, key)
    ctl = [sandctl, "--server", url, "--key", key]
    cold_samples = []
    for _ in range(cold):
        subprocess.run(ctl + ["rm", APP], capture_output=True)
        subprocess.run(ctl + ["deploy", appdir], check=True, capture_output=True)
        cold_samples.append(one(client))
    for _ in range(warmup):
        one(client)
    warm_samples = [one(client) for _ in range(warm)]
    with open(out, "w") as f:
        json.dump({"mode": mode, "warm": warm_samples, "cold": cold_samples}, f)


LABELS = {
    "sand": "SAND (app sandbox, local bus, fork)",
    "openwhisk": "grain sandbox + global bus (OpenWhisk-like)",
    "greengrass": "grain sandbox + local bus (Greengrass-like)",
    "sand-c": "SAND, C grains (fork)",
    "sand-java": "SAND, Java grains (thread per event)",
}
PERCALL = "-percall"  # modes run with sandbox.cold: on: every invocation starts fresh sandboxes


def report(files):
    modes = []
    for p in files:
        with open(p) as f:
            modes.append(json.load(f))
    data = {"unit": "us", "modes": [], "notes": []}
    rows = []
    p50 = {}
    for m in modes:
        percall = m["mode"].endswith(PERCALL)
        base = m["mode"][:-len(PERCALL)] if percall else m["mode"]
        label = LABELS.get(base, base) + (", fresh sandbox per event" if percall else "")
        entry = {"mode": m["mode"], "label": label}
        for kind in ("warm", "cold"):
            if percall and kind == "warm":
                continue  # every invocation of this mode is a cold start: its samples are "cold"
            samples = m["warm"] + m["cold"] if percall else m[kind]
            m = dict(m, **{kind: samples})
            hops = [s["hop_us"] for s in m[kind]]
            e2e = [s["e2e_client_us"] for s in m[kind]]
            st = benchlib.summary(hops)
            entry[kind] = {"samples": m[kind], "hop_us": st,
                           "e2e_client_us": benchlib.summary(e2e)}
            if percall or (base, kind) not in p50:
                p50[(base, kind)] = st.get("p50")
            rows.append([entry["label"], kind, st["n"], st.get("p50"), st.get("p90"),
                         st.get("p99"), benchlib.percentile(e2e, 50),
                         max(e2e) / 1000 if e2e else None])
        data["modes"].append(entry)
    notes = []
    for kind in ("warm", "cold"):
        base = p50.get(("sand", kind))
        if not base:
            continue
        for other in ("openwhisk", "greengrass"):
            if p50.get((other, kind)):
                r = p50[(other, kind)] / base
                notes.append(f"{kind}: SAND hop is {r:.2f}x faster than {LABELS[other]} (p50)")
                data[f"speedup_{kind}_{other}"] = r
    notes.append("Python grains unless the mode says otherwise; the C and Java rows run in SAND "
                 "mode (Java: 200 unrecorded warm-up invocations for the JIT).")
    notes.append("hop = second step's started_us - first step's finished_us (execution record); "
                 "e2e = blocking HTTP invocation seen by one keep-alive client.")
    notes.append("cold = the first invocation after `sandctl rm` + `sandctl deploy` (workers are "
                 "started at deploy, so this is a first event, not a sandbox start); rows marked "
                 "'fresh sandbox per event' run with `sandbox.cold: on` (with the docker driver: "
                 "a container started for every event, as other platforms' cold starts) and are "
                 "the cold figures of the speedups.")
    data["notes"] = notes
    text = benchlib.table(["mode", "kind", "n", "hop p50 us", "hop p90 us", "hop p99 us",
                           "e2e p50 us", "e2e max ms"], rows)
    benchlib.write_table("interaction", "interaction: grain-to-grain hop latency (us)",
                         text + "\n\n" + "\n".join("- " + x for x in notes))
    benchlib.write_result("interaction", data)

    plt = benchlib.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, kind in zip(axes, ("warm", "cold")):
        names = [m["mode"] for m in modes]
        vals = [[s["hop_us"] / 1000.0 for s in m[kind]] or [0] for m in modes]
        ax.boxplot(vals, labels=names, whis=(1, 99), showfliers=False)
        ax.set_yscale("log")
        ax.set_title(f"{kind} hop latency (p1..p99)")
        ax.set_ylabel("ms (log scale)")
    fig.tight_layout()
    fig.savefig(benchlib.plot_path("interaction"), dpi=110)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        a = sys.argv[2:]
        run(a[0], a[1], a[2], a[3], a[4], int(a[5]), int(a[6]), a[7],
            int(a[8]) if len(a) > 8 else 50)
    else:
        report(sys.argv[2:])
