"""Figure "pipeline": the image-processing pipeline of examples/image-pipeline
(extract -> transform -> [thumbnail, store] -> collect), per mode: total execution time (the
record's finished_us - started_us) against the compute time of each step (its finished_us -
started_us, i.e. the instance running the handler). The platform's overhead is the total minus
the critical path of compute (extract + transform + max(thumbnail, store) + collect).

  pipeline.py run MODE URL KEY N OUT.json
  pipeline.py data URL KEY N OUT.json     1 MiB put + get through the local data layer
  pipeline.py report OUT.json... [DATA.json]
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

APP, WF = "image-pipeline", "process"
STEPS = ["extract", "transform", "thumbnail", "store", "collect"]


def one(client, i):
    t0 = time.perf_counter_ns()
    st, xid, body = client.invoke(APP, WF, {"image": "sample.jpg", "id": f"b{i}"})
    e2e = (time.perf_counter_ns() - t0) / 1000.0
    if st != 200:
        raise RuntimeError(f"invoke: {st} {body[:300]!r}")
    rec = client.execution(xid)
    s = benchlib.steps_by_name(rec)
    compute = {k: s[k]["finished_us"] - s[k]["started_us"] for k in STEPS}
    total = rec["finished_us"] - rec["started_us"]
    critical = (compute["extract"] + compute["transform"] +
                max(compute["thumbnail"], compute["store"]) + compute["collect"])
    return {"total_us": total, "e2e_client_us": e2e, "compute_us": compute,
            "critical_compute_us": critical, "overhead_us": total - critical,
            "steps": rec["steps"], "started_us": rec["started_us"]}


def run(mode, url, key, n, out):
    client = benchlib.Sand(url, key)
    cold = one(client, 0)
    for i in range(5):
        one(client, i + 1)
    warm = [one(client, i + 10) for i in range(n)]
    with open(out, "w") as f:
        json.dump({"mode": mode, "cold": [cold], "warm": warm}, f)


def data(url, key, n, out):
    client = benchlib.Sand(url, key)
    res = {}
    for size in (1024, 1 << 20):
        st, _, body = client.invoke("bench-data", "putget", {"size": size, "n": n})
        if st != 200:
            raise RuntimeError(f"invoke: {st} {body[:300]!r}")
        res[str(size)] = json.loads(body)
    with open(out, "w") as f:
        json.dump({"data_layer": res}, f)


LABELS = {
    "sand": "SAND (app sandbox, local bus, fork)",
    "openwhisk": "grain sandbox + global bus (OpenWhisk-like)",
    "greengrass": "grain sandbox + local bus (Greengrass-like)",
}


def report(files):
    modes, dl = [], None
    for p in files:
        with open(p) as f:
            d = json.load(f)
        if "data_layer" in d:
            dl = d["data_layer"]
        else:
            modes.append(d)
    rows = []
    data = {"unit": "us", "modes": []}
    p50 = {}
    for m in modes:
        entry = {"mode": m["mode"], "label": LABELS.get(m["mode"], m["mode"]), "samples": m}
        for kind in ("warm", "cold"):
            xs = m[kind]
            tot = benchlib.summary([x["total_us"] for x in xs])
            ovh = benchlib.summary([x["overhead_us"] for x in xs])
            comp = {k: benchlib.percentile([x["compute_us"][k] for x in xs], 50) for k in STEPS}
            entry[kind] = {"total_us": tot, "overhead_us": ovh, "compute_p50_us": comp}
            p50[(m["mode"], kind)] = (tot["p50"], ovh["p50"])
            rows.append([entry["label"], kind, tot["n"], tot["p50"] / 1000, tot["p99"] / 1000,
                         ovh["p50"] / 1000] + [comp[k] / 1000 for k in STEPS])
        data["modes"].append(entry)
    notes = []
    base = p50.get(("sand", "warm"))
    for other in ("openwhisk", "greengrass"):
        o = p50.get((other, "warm"))
        if base and o:
            r_ovh = o[1] / base[1] if base[1] > 0 else float("nan")
            faster = (o[0] - base[0]) / o[0] * 100
            notes.append(f"warm: SAND has {r_ovh:.1f}x less overhead than {LABELS[other]} and is "
                         f"{faster:.0f}% faster end to end (p50)")
            data[f"overhead_ratio_{other}"] = r_ovh
            data[f"faster_pct_{other}"] = faster
    notes.append("overhead = total - (extract + transform + max(thumbnail, store) + collect); "
                 "cold = the first invocation after deploy; warm: N invocations after 5.")
    data["notes"] = notes
    text = benchlib.table(["mode", "kind", "n", "total p50 ms", "total p99 ms", "overhead p50 ms"] +
                          [f"{k} ms" for k in STEPS], rows)
    text += "\n\n" + "\n".join("- " + x for x in notes)
    if dl:
        drows = []
        for size, r in dl.items():
            for k in ("put_us", "get_us", "put_get_us"):
                st = benchlib.summary(r[k])
                drows.append([size, k[:-3].replace("_", " + "), st["n"], st["p50"], st["p90"],
                              st["p99"]])
        data["data_layer"] = {size: {k: {"samples": r[k], **benchlib.summary(r[k])}
                                     for k in ("put_us", "get_us", "put_get_us")}
                              for size, r in dl.items()}
        text += ("\n\nLocal data layer from a Python grain instance (context.put / context.get, "
                 "timed inside the instance, SAND mode):\n\n" +
                 benchlib.table(["bytes", "operation", "n", "p50 us", "p90 us", "p99 us"], drows))
    benchlib.write_table("pipeline", "pipeline: image pipeline, total vs compute per step (ms)",
                         text)
    benchlib.write_result("pipeline", data)

    plt = benchlib.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = [m["mode"] for m in modes]
    bottoms = [0.0] * len(modes)
    for k in STEPS + ["overhead"]:
        ys = []
        for m in modes:
            xs = m["warm"]
            if k == "overhead":
                ys.append(benchlib.percentile([x["overhead_us"] for x in xs], 50) / 1000)
            elif k == "store":
                ys.append(0.0)  # runs in parallel with thumbnail: not on the critical path
            else:
                ys.append(benchlib.percentile([x["compute_us"][k] for x in xs], 50) / 1000)
        if k == "store":
            continue
        ax.bar(names, ys, bottom=bottoms, label=k)
        bottoms = [b + y for b, y in zip(bottoms, ys)]
    ax.set_ylabel("ms (p50, warm)")
    ax.set_title("Image pipeline: compute on the critical path vs platform overhead")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(benchlib.plot_path("pipeline"), dpi=110)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
    elif sys.argv[1] == "data":
        data(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        report(sys.argv[2:])
