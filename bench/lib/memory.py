"""Figure "memory": memory of an app's sandbox with N concurrent executions of one small Python
grain (bench/apps/mem, sleeps 2 s), per mode. The sandbox is the supervisor's process tree
(process driver: the pids of GET /v1/apps/{app} sandbox.ids); for each process
/proc/PID/smaps_rollup gives Pss and Private_Dirty. Growth per execution =
(total(N) - total(idle)) / N; the instance figure is the mean Private_Dirty of the forked
instance processes themselves.

  memory.py run MODE URL KEY NS OUT.json     NS: comma-separated concurrency levels
  memory.py report OUT.json...
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

APP, WF = "bench-mem", "sleep"
HOLD_S = 2.0


def snapshot(client):
    desc = client.app(APP)
    roots = [int(x) for x in desc["sandbox"].get("ids", [])]
    workers = {w["pid"] for g in desc["grains"] for w in g.get("workers", [])}
    procs = []
    for r in roots:
        for pid in benchlib.proc_tree(r):
            sm = benchlib.smaps_rollup(pid)
            if sm is None:
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                ppid = 0
            role = "worker" if pid in workers else "instance" if ppid in workers else "other"
            procs.append({"pid": pid, "role": role, "pss_kb": sm.get("Pss", 0),
                          "private_dirty_kb": sm.get("Private_Dirty", 0),
                          "rss_kb": sm.get("Rss", 0)})
    return {
        "procs": procs,
        "pss_kb": sum(p["pss_kb"] for p in procs),
        "private_dirty_kb": sum(p["private_dirty_kb"] for p in procs),
        "rss_kb": sum(p["rss_kb"] for p in procs),
        "instances": sum(1 for p in procs if p["role"] == "instance"),
    }


def run(mode, url, key, ns, out):
    client = benchlib.Sand(url, key)
    # warm the grain once, then let the sandbox settle
    client.invoke(APP, WF, {"s": 0})
    time.sleep(0.5)
    idle = snapshot(client)
    levels = []
    if mode == "reuse":
        ns = [max(ns)]
    for n in ns:
        xids = []
        for _ in range(n):
            st, xid, body = client.invoke(APP, WF, {"s": HOLD_S}, asynchronous=True)
            if st != 202:
                raise RuntimeError(f"async invoke: {st} {body[:200]!r}")
            xids.append(xid)
        time.sleep(HOLD_S / 2)
        snap = snapshot(client)
        inst = [p["private_dirty_kb"] for p in snap["procs"] if p["role"] == "instance"]
        inst_pss = [p["pss_kb"] for p in snap["procs"] if p["role"] == "instance"]
        levels.append({
            "n": n, "snapshot": snap,
            "growth_pss_kb_per_exec": (snap["pss_kb"] - idle["pss_kb"]) / n,
            "growth_private_dirty_kb_per_exec": (snap["private_dirty_kb"] - idle["private_dirty_kb"]) / n,
            "instance_private_dirty_kb": benchlib.summary(inst),
            "instance_pss_kb": benchlib.summary(inst_pss),
        })
        if mode == "reuse":
            break  # one event at a time: draining the queue would take n * 2 s
        for x in xids:
            rec = client.wait_execution(x, timeout=60)
            if rec["status"] != "succeeded":
                raise RuntimeError(f"execution {x}: {rec['status']}")
        time.sleep(0.3)
    with open(out, "w") as f:
        json.dump({"mode": mode, "idle": idle, "levels": levels}, f)


def run_exec(ns, out):
    """Baseline outside sand: a fresh Python interpreter per call (what a platform without a
    warm worker to fork from pays), N of them alive at once."""
    import subprocess
    code = ("import json, time, sys; sys.stdout.write(json.dumps({'ok': True})); "
            "sys.stdout.flush(); time.sleep(%f)" % (HOLD_S * 2))
    levels = []
    for n in ns:
        ps = [subprocess.Popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE)
              for _ in range(n)]
        for p in ps:
            p.stdout.read(5)
        procs = []
        for p in ps:
            sm = benchlib.smaps_rollup(p.pid) or {}
            procs.append({"pid": p.pid, "role": "instance", "pss_kb": sm.get("Pss", 0),
                          "private_dirty_kb": sm.get("Private_Dirty", 0),
                          "rss_kb": sm.get("Rss", 0)})
        for p in ps:
            p.kill()
            p.wait()
        snap = {"procs": procs, "instances": n,
                "pss_kb": sum(p["pss_kb"] for p in procs),
                "private_dirty_kb": sum(p["private_dirty_kb"] for p in procs),
                "rss_kb": sum(p["rss_kb"] for p in procs)}
        levels.append({"n": n, "snapshot": snap,
                       "growth_pss_kb_per_exec": snap["pss_kb"] / n,
                       "growth_private_dirty_kb_per_exec": snap["private_dirty_kb"] / n,
                       "instance_private_dirty_kb": benchlib.summary([p["private_dirty_kb"] for p in procs]),
                       "instance_pss_kb": benchlib.summary([p["pss_kb"] for p in procs])})
    idle = {"procs": [], "instances": 0, "pss_kb": 0, "private_dirty_kb": 0, "rss_kb": 0}
    with open(out, "w") as f:
        json.dump({"mode": "exec", "idle": idle, "levels": levels}, f)


LABELS = {
    "exec": "baseline: a new python3 process per call (no sand)",
    "fork": "SAND: app sandbox, fork per event",
    "reuse": "app sandbox, handler reused in the worker (no fork)",
    "grain": "one sandbox per grain, fork per event",
}


def report(files):
    modes = []
    for p in files:
        with open(p) as f:
            modes.append(json.load(f))
    rows = []
    for m in modes:
        idle = m["idle"]
        rows.append([LABELS.get(m["mode"], m["mode"]), 0, idle["instances"],
                     idle["pss_kb"] / 1024, idle["private_dirty_kb"] / 1024, "-", "-", "-"])
        for lv in m["levels"]:
            s = lv["snapshot"]
            rows.append([LABELS.get(m["mode"], m["mode"]), lv["n"], s["instances"],
                         s["pss_kb"] / 1024, s["private_dirty_kb"] / 1024,
                         lv["growth_pss_kb_per_exec"] / 1024,
                         lv["growth_private_dirty_kb_per_exec"] / 1024,
                         (lv["instance_private_dirty_kb"].get("mean") or 0) / 1024])
    notes = [
        f"each execution sleeps {HOLD_S:.0f} s; the snapshot is taken {HOLD_S / 2:.0f} s after "
        "the N asynchronous invocations were sent; live instances include the pre-forked spare.",
        "reuse runs one event at a time inside the worker (the other N-1 wait in the queue), so "
        "only N=50 is sampled: memory stays flat but the 50 calls take 50 x 2 s.",
        "process driver: sums over the supervisor's process tree; with the docker driver the "
        "container's memory (docker stats) would include the same processes.",
    ]
    text = benchlib.table(["mode", "N", "instances", "PSS MB", "Private_Dirty MB",
                           "+PSS MB/exec", "+Private_Dirty MB/exec", "instance Private_Dirty MB"],
                          rows)
    benchlib.write_table("memory", "memory: sandbox memory with N concurrent executions",
                         text + "\n\n" + "\n".join("- " + x for x in notes))
    benchlib.write_result("memory", {"unit": "kB", "hold_s": HOLD_S, "modes": modes,
                                     "notes": notes})

    plt = benchlib.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for m in modes:
        xs = [0] + [lv["n"] for lv in m["levels"]]
        ys = [m["idle"]["pss_kb"] / 1024] + [lv["snapshot"]["pss_kb"] / 1024 for lv in m["levels"]]
        ax.plot(xs, ys, marker="o", label=LABELS.get(m["mode"], m["mode"]))
    ax.set_xlabel("concurrent executions")
    ax.set_ylabel("sandbox PSS (MB)")
    ax.set_title("Sandbox memory vs concurrent executions of one Python grain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(benchlib.plot_path("memory"), dpi=110)


if __name__ == "__main__":
    if sys.argv[1] == "run-exec":
        run_exec([int(x) for x in sys.argv[2].split(",")], sys.argv[3])
    elif sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4], [int(x) for x in sys.argv[5].split(",")],
            sys.argv[6])
    else:
        report(sys.argv[2:])
