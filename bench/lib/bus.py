"""Figure "bus": one-way message latency of the local bus (a Redis stream: XADD ->
XREADGROUP BLOCK over a unix socket) against the global bus (Kafka: produce -> consume, the
embedded librdkafka mock cluster that sandd uses), from C (hiredis/librdkafka), Python
(RESP written by hand / confluent_kafka) and Java (RESP by hand over java.nio; no Kafka client:
see the notes). Every client sends one message at a time to a consumer blocked in its read,
on its own connection, and measures send -> receipt with CLOCK_MONOTONIC.
Usage: bus.py BIN_DIR JAVA_CLASS_DIR REDIS_SOCKET KAFKA_BOOTSTRAP
"""

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

BIN, JDIR, RSOCK, KBOOT = sys.argv[1:5]
QUICK = os.environ.get("BENCH_QUICK") == "1"
N_REDIS = 200 if QUICK else 2000
N_KAFKA = 50 if QUICK else 500
SIZE = 100
WARMUP = 20


class Resp:
    """A minimal RESP2 client over a unix socket."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            raise RuntimeError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            v = self.f.read(n + 2)[:-2]
            return v
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("bad RESP reply %r" % line)


def run_pair(n, produce, consume):
    """Forks a consumer (consume(n_total, ack_fd, out_fd) before it returns), then produces
    one message at a time; returns the consumer's samples (us)."""
    ack_r, ack_w = os.pipe()
    out_r, out_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ack_r)
        os.close(out_r)
        os.read(go_r, 1)
        try:
            consume(n + WARMUP, ack_w, out_w)
        finally:
            os._exit(0)
    os.close(ack_w)
    os.close(out_w)
    produce(n + WARMUP, ack_r, go_w)
    data = b""
    while True:
        chunk = os.read(out_r, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    vals = [float(x) for x in data.split()]
    return vals[WARMUP:]


def py_redis(n):
    def produce(total, ack_r, go_w):
        r = Resp(RSOCK)
        r.call("DEL", "benchpy")
        r.call("XGROUP", "CREATE", "benchpy", "g", "$", "MKSTREAM")
        os.write(go_w, b"g")
        time.sleep(0.2)
        pad = "x" * (SIZE - 20)
        for _ in range(total):
            time.sleep(0.0002)
            t = time.monotonic_ns()
            r.call("XADD", "benchpy", "MAXLEN", "~", "1000", "*", "d", f"{t} {pad}")
            os.read(ack_r, 1)
        r.call("DEL", "benchpy")

    def consume(total, ack_w, out_w):
        r = Resp(RSOCK)
        out = []
        for _ in range(total):
            rep = r.call("XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "BLOCK", "0", "STREAMS",
                         "benchpy", ">")
            now = time.monotonic_ns()
            eid, kv = rep[0][1][0]
            t = int(kv[1].split(b" ", 1)[0])
            out.append((now - t) / 1000.0)
            r.call("XACK", "benchpy", "g", eid)
            os.write(ack_w, b"a")
        os.write(out_w, "\n".join(f"{v:.1f}" for v in out).encode())

    return run_pair(n, produce, consume)


def py_kafka(n):
    from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
    topic = f"sand-bench-py-{os.getpid()}-{time.monotonic_ns()}"

    def produce(total, ack_r, go_w):
        p = Producer({"bootstrap.servers": KBOOT, "linger.ms": 0})
        p.produce(topic, b"0", partition=0)
        p.flush(10)
        os.write(go_w, b"g")
        pad = "x" * (SIZE - 20)
        for _ in range(total):
            time.sleep(0.0002)
            t = time.monotonic_ns()
            p.produce(topic, f"{t} {pad}".encode(), partition=0)
            p.poll(0)
            os.read(ack_r, 1)
        p.flush(5)

    def consume(total, ack_w, out_w):
        c = Consumer({"bootstrap.servers": KBOOT, "group.id": "sand-bench-py",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        while len(out) < total:
            m = c.poll(1.0)
            if m is None or m.error():
                continue
            now = time.monotonic_ns()
            t = int(m.value().split(b" ", 1)[0])
            if t == 0:
                continue
            out.append((now - t) / 1000.0)
            os.write(ack_w, b"a")
        c.close()
        os.write(out_w, "\n".join(f"{v:.1f}" for v in out).encode())

    return run_pair(n, produce, consume)


def c_probe(kind, target, n):
    out = subprocess.run([os.path.join(BIN, "sand-bench-bus"), kind, target, str(n), str(SIZE)],
                         check=True, capture_output=True, text=True)
    return [float(x) for x in out.stdout.split()]


def java_redis(n):
    out = subprocess.run(["java", "-cp", JDIR, "BenchBus", RSOCK, str(n), str(SIZE)],
                         check=True, capture_output=True, text=True)
    return [float(x) for x in out.stdout.split()]


def main():
    series = {}
    series[("C", "local (Redis)")] = c_probe("redis", RSOCK, N_REDIS)
    series[("C", "global (Kafka)")] = c_probe("kafka", KBOOT, N_KAFKA)
    series[("Python", "local (Redis)")] = py_redis(N_REDIS)
    series[("Python", "global (Kafka)")] = py_kafka(N_KAFKA)
    series[("Java", "local (Redis)")] = java_redis(N_REDIS)
    env = dict(os.environ, SAND_BENCH_FETCH_WAIT_MS="1")
    out = subprocess.run([os.path.join(BIN, "sand-bench-bus"), "kafka", KBOOT, str(N_KAFKA),
                          str(SIZE)], check=True, capture_output=True, text=True, env=env)
    series[("C", "global (Kafka), fetch.wait.max.ms=1")] = [float(x) for x in out.stdout.split()]
    notes = [
        f"{SIZE}-byte messages, one at a time to a consumer blocked in its read; local: a "
        "redis-server on a unix socket; global: sand-kafka (librdkafka's mock cluster, the "
        "embedded default) on loopback, linger.ms=0, consumer fetch.wait.max.ms=10 as sandd.",
        "The mock cluster answers a fetch when fetch.wait.max.ms expires rather than when data "
        "arrives, so Kafka latency here is about that setting (see the fetch.wait.max.ms=1 row); "
        "a real broker wakes the fetch on new data, but adds its own network and log append.",
        "Java Kafka: not measured. The only Java Kafka client is Apache kafka-clients, which "
        "Debian does not package (it would need Maven jars); the Java local-bus client speaks "
        "RESP by hand over java.nio's unix socket support.",
    ]
    rows = []
    data = {"unit": "us", "message_bytes": SIZE, "notes": notes, "series": []}
    for (lang, bus), s in series.items():
        st = benchlib.summary(s)
        data["series"].append({"client": lang, "bus": bus, "samples_us": s, **st})
        rows.append([lang, bus, st["n"], st["p50"], st["p90"], st["p99"]])
    ratios = []
    for lang in ("C", "Python"):
        loc = benchlib.percentile(series[(lang, "local (Redis)")], 50)
        glo = benchlib.percentile(series[(lang, "global (Kafka)")], 50)
        ratios.append(f"{lang}: local bus {glo / loc:.1f}x faster than global (p50)")
        data[f"ratio_p50_{lang.lower()}"] = glo / loc
    text = benchlib.table(["client", "bus", "n", "p50 us", "p90 us", "p99 us"], rows)
    text += "\n\n" + "\n".join("- " + r for r in ratios + notes)
    benchlib.write_table("bus", "bus: one-way message latency (us)", text)
    benchlib.write_result("bus", data)

    plt = benchlib.pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    labels = [f"{lang}\n{bus}" for (lang, bus) in series]
    ax.boxplot(list(series.values()), labels=labels, whis=(1, 99), showfliers=False)
    ax.set_yscale("log")
    ax.set_ylabel("one-way latency (us, log scale)")
    ax.set_title("Local bus (Redis stream) vs global bus (Kafka): p1..p99 whiskers")
    plt.setp(ax.get_xticklabels(), fontsize=7)
    fig.tight_layout()
    fig.savefig(benchlib.plot_path("bus"), dpi=110)


if __name__ == "__main__":
    main()
