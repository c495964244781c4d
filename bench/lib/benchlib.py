"""Shared code of the benchmark drivers: the machine description, percentiles, the result
files (bench/results/NAME.json with every raw sample, p50/p90/p99 and the machine), a plain
text table, and a keep-alive HTTP client for sandd's API."""

import http.client
import json
import os
import platform
import time
import urllib.parse


def machine():
    """CPU model, cores, kernel and memory of this host."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as f:
            load = [float(x) for x in f.read().split()[:3]]
    except OSError:
        load = []
    return {
        "loadavg_1_5_15": load,
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_mb": mem_kb // 1024,
        "python": platform.python_version(),
    }


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a list of numbers; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values):
    """n, mean, min, p50, p90, p99, max of a list of numbers."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def results_dir():
    d = os.environ.get("BENCH_RESULTS") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
    os.makedirs(d, exist_ok=True)
    return d


def write_result(name, data):
    """Writes results/NAME.json with the machine and a timestamp added; returns the path."""
    data = dict(data)
    data.setdefault("benchmark", name)
    data["machine"] = machine()
    data["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = os.path.join(results_dir(), name + ".json")
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    return path


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        a = abs(v)
        return f"{v:.3f}" if a < 1 else f"{v:.2f}" if a < 100 else f"{v:.{digits}f}"
    return str(v)


def table(headers, rows):
    """A Markdown table (also readable as plain text)."""
    cells = [[str(h) for h in headers]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for j, r in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |")
        if j == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def write_table(name, title, text):
    """Prints a table and keeps it as results/NAME.md for REPORT.md."""
    print(f"\n## {title}\n\n{text}\n")
    with open(os.path.join(results_dir(), name + ".md"), "w") as f:
        f.write(f"## {title}\n\n{text}\n")


def plot_path(name):
    return os.path.join(results_dir(), name + ".png")


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


class Sand:
    """A keep-alive HTTP/1.1 client for sandd's API (one connection, one request at a time)."""

    def __init__(self, url, key):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.key = key
        self.conn = None

    def _conn(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            self.conn.connect()
            import socket
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def request(self, method, path, body=None):
        """Returns (status, headers dict lower-cased, body bytes)."""
        headers = {"Authorization": "Bearer " + self.key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            c = self._conn()
            try:
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise

    def invoke(self, app, wf, event, asynchronous=False):
        """Blocking (or async) workflow invocation; returns (status, execution id, body)."""
        path = f"/v1/apps/{app}/workflows/{wf}" + ("?async=1" if asynchronous else "")
        st, h, data = self.request("POST", path, json.dumps(event))
        xid = h.get("x-sand-execution-id")
        if asynchronous and st == 202:
            xid = json.loads(data)["execution_id"]
        return st, xid, data

    def execution(self, xid):
        st, _, data = self.request("GET", f"/v1/executions/{xid}")
        if st != 200:
            raise RuntimeError(f"GET /v1/executions/{xid}: {st} {data[:200]!r}")
        return json.loads(data)

    def wait_execution(self, xid, timeout=60):
        end = time.time() + timeout
        while True:
            rec = self.execution(xid)
            if rec["status"] != "running" or time.time() > end:
                return rec
            time.sleep(0.02)

    def app(self, name):
        st, _, data = self.request("GET", f"/v1/apps/{name}")
        return json.loads(data)


def steps_by_name(rec):
    """The execution record's steps keyed by step name (the last attempt of each)."""
    out = {}
    for s in rec.get("steps", []):
        out[s["step"]] = s
    return out


def proc_tree(root):
    """root and every descendant pid (through /proc/PID/task/*/children)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def smaps_rollup(pid):
    """{'Pss': kB, 'Private_Dirty': kB, 'Rss': kB, ...} of one process, or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            vals = {}
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                    vals[parts[0][:-1]] = int(parts[1])
            return vals
    except OSError:
        return None
