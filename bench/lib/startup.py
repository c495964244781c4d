"""Figure "startup": the time to start a handler, per mechanism and runtime.

Mechanisms, slowest first as in the SAND paper: `docker run` (a new container per call),
`docker exec` (a new process in a running container), process exec (a new process on the host,
posix_spawn + wait), and fork (a warm process forks an instance that runs the handler; for Java,
whose JVM cannot fork, a new thread in the warm JVM, as sand's Java runtime does).
Each sample is the wall time from the start request until the handler has finished and its
process was reaped (or its thread joined). Usage: startup.py BIN_DIR JAVA_CLASS_DIR
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

BIN, JDIR = sys.argv[1], sys.argv[2]
QUICK = os.environ.get("BENCH_QUICK") == "1"
IMAGE = "sand-bench:empty"
PY_HANDLER = "import json; print(json.dumps({'ok': True}))"


def n(full, quick):
    return quick if QUICK else full


def spawn_samples(count, argv):
    out = subprocess.run([os.path.join(BIN, "sand-bench-startup"), "exec", str(count)] + argv,
                         check=True, capture_output=True, text=True)
    return [int(x) / 1000.0 for x in out.stdout.split()]


def c_fork(count):
    out = subprocess.run([os.path.join(BIN, "sand-bench-startup"), "fork", str(count)],
                         check=True, capture_output=True, text=True)
    return [int(x) / 1000.0 for x in out.stdout.split()]


def py_fork(count):
    """A warm CPython (json imported) forks an instance that runs a JSON handler and exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    res = []
    for i in range(count + 20):
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os.write(devnull, json.dumps({"pid": os.getpid(), "ok": True}).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        if i >= 20:
            res.append((time.perf_counter_ns() - t0) / 1e6)
    os.close(devnull)
    return res


def java_thread(count):
    out = subprocess.run(["java", "-cp", JDIR, "BenchThread", str(count)], check=True,
                         capture_output=True, text=True)
    return [int(x) / 1000.0 for x in out.stdout.split()]


def docker_ok():
    if not shutil.which("docker"):
        return False
    r = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                       capture_output=True, text=True)
    return r.returncode == 0


def ensure_image():
    r = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True)
    if r.returncode == 0:
        return
    # an empty image: the host's runtimes come in through read-only bind mounts
    subprocess.run(["docker", "import", "-", IMAGE], input=b"\0" * 1024, check=True,
                   capture_output=True)


def mounts():
    m = []
    for d in ("/usr", "/lib", "/lib64", "/etc"):
        if os.path.exists(d):
            m += ["-v", f"{os.path.realpath(d)}:{d}:ro"]
    m += ["-v", f"{BIN}:/bench:ro", "-v", f"{JDIR}:/benchj:ro"]
    return m


def java_bin():
    return os.path.realpath(shutil.which("java"))


def handlers_in_container():
    return {
        "C": ["/bench/sand-bench-noop"],
        "Python": ["/usr/bin/python3", "-c", PY_HANDLER],
        "Java": [java_bin(), "-XX:-UsePerfData", "-Xshare:auto", "-cp", "/benchj", "BenchNoop"],
    }


def main():
    results = {}  # (mechanism, runtime) -> samples in ms
    notes = []
    results[("fork", "C")] = c_fork(n(1000, 100))
    results[("fork", "Python")] = py_fork(n(500, 50))
    results[("fork", "Java")] = java_thread(n(1000, 100))
    notes.append("Java 'fork' is a new thread in the warm JVM (a JVM cannot fork safely).")
    results[("exec", "C")] = spawn_samples(n(300, 30), [os.path.join(BIN, "sand-bench-noop")])
    results[("exec", "Python")] = spawn_samples(n(50, 5), ["/usr/bin/python3", "-c", PY_HANDLER])
    results[("exec", "Java")] = spawn_samples(n(20, 3), ["java", "-cp", JDIR, "BenchNoop"])
    if docker_ok():
        ensure_image()
        base = ["docker", "run", "--rm", "--network", "none", "--log-driver", "none"] + mounts()
        base += ["--tmpfs", "/tmp", IMAGE]
        for rt, argv in handlers_in_container().items():
            results[("docker run", rt)] = spawn_samples(n(10, 2), base + argv)
        name = f"sand-bench-exec-{os.getpid()}"
        subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "none"] +
                       mounts() + ["--tmpfs", "/tmp", IMAGE, "/usr/bin/sleep", "600"],
                       check=True, capture_output=True)
        try:
            for rt, argv in handlers_in_container().items():
                results[("docker exec", rt)] = spawn_samples(n(20, 3), ["docker", "exec", name] + argv)
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        notes.append("docker run/exec are timed through the docker CLI (what a user or the paper "
                     "measures); image: an empty image with the host's /usr, /lib, /etc mounted "
                     "read-only, --network none.")
    else:
        notes.append("docker is not reachable: docker run/exec not measured "
                     "(scripts/start-services.sh starts dockerd).")

    order = ["docker run", "docker exec", "exec", "fork"]
    runtimes = ["C", "Python", "Java"]
    rows = []
    data = {"unit": "ms", "notes": notes, "series": []}
    for mech in order:
        for rt in runtimes:
            s = results.get((mech, rt))
            if s is None:
                continue
            st = benchlib.summary(s)
            data["series"].append({"mechanism": mech, "runtime": rt, "samples_ms": s, **st})
            rows.append([mech, rt, st["n"], st["p50"], st["p90"], st["p99"]])
    rows = [[r[0], r[1], r[2]] + [round(v, 3) for v in r[3:]] for r in rows]
    benchlib.write_table("startup", "startup: time to start a handler (ms)",
                         benchlib.table(["mechanism", "runtime", "n", "p50 ms", "p90 ms", "p99 ms"],
                                        rows) + "\n\n" + "\n".join("- " + x for x in notes))
    benchlib.write_result("startup", data)

    plt = benchlib.pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.25
    mechs = [m for m in order if any((m, rt) in results for rt in runtimes)]
    for i, rt in enumerate(runtimes):
        ys = [benchlib.percentile(results[(m, rt)], 50) if (m, rt) in results else 0 for m in mechs]
        xs = [j + (i - 1) * width for j in range(len(mechs))]
        ax.bar(xs, ys, width, label=rt)
    ax.set_xticks(range(len(mechs)))
    ax.set_xticklabels(mechs)
    ax.set_yscale("log")
    ax.set_ylabel("p50 start-up time (ms, log scale)")
    ax.set_title("Handler start-up time per mechanism and runtime")
    ax.legend()
    fig.tight_layout()
    fig.savefig(benchlib.plot_path("startup"), dpi=110)


if __name__ == "__main__":
    main()
