# Shared helpers of the benchmark commands (sourced, not executed): locate the build, start a
# sandd with a given mode on a free loopback port and a data dir under /tmp, deploy apps, and
# stop everything that was started, even when the benchmark fails half way.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
BUILD_DIR=${SAND_BUILD_DIR:-$REPO_DIR/build-bench}
BIN=$BUILD_DIR/bin
RESULTS=${BENCH_RESULTS:-$BENCH_DIR/results}
PY=/usr/bin/python3
mkdir -p "$RESULTS"

SANDD_PIDS=()
SANDD_DATAS=()

# mk_tmp NAME: creates and prints a new private directory /tmp/sand-bench-NAME.<pid>.<random>.
mk_tmp() {
    local d
    while :; do
        d=/tmp/sand-bench-$1.$$.$RANDOM
        mkdir -m 700 "$d" 2>/dev/null && break
    done
    echo "$d"
}

need_build() {
    local b
    for b in sandd sandctl sand-kafka "$@"; do
        if [[ ! -x $BIN/$b ]]; then
            echo "bench: $BIN/$b is missing; build first:" >&2
            echo "  cmake -S $REPO_DIR -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release && cmake --build $BUILD_DIR -j2" >&2
            exit 2
        fi
    done
}

free_port() {
    $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_sandd NAME KEY=VALUE... : starts sandd with the given dotted config keys; sets
# SAND_URL, SAND_DATA, SAND_KEY for the caller.
start_sandd() {
    local name=$1
    shift
    local port data cfg kv
    port=$(free_port)
    data=$(mk_tmp "$name")
    cfg=$data.yaml
    {
        echo "listen: 127.0.0.1:$port"
        echo "data_dir: $data"
        echo "log_level: warn"
        for kv in "$@"; do
            echo "${kv%%=*}: ${kv#*=}"
        done
    } >"$cfg"
    "$BIN/sandd" -c "$cfg" --foreground 2>"$data.log" &
    SANDD_PIDS+=($!)
    SANDD_DATAS+=("$data")
    SAND_URL=http://127.0.0.1:$port
    SAND_DATA=$data
    local i
    for i in $(seq 1 200); do
        if curl -s -o /dev/null --max-time 1 "$SAND_URL/healthz" 2>/dev/null && [[ -s $data/api.key ]]; then
            SAND_KEY=$(cat "$data/api.key")
            return 0
        fi
        sleep 0.1
    done
    echo "bench: sandd ($name) did not start; its log:" >&2
    tail -20 "$data.log" >&2
    return 1
}

# deploy DIR: deploys an app bundle on the current sandd and waits until it is ready.
deploy() {
    "$BIN/sandctl" --server "$SAND_URL" --key "$SAND_KEY" deploy "$1" >/dev/null
}

# sandbox_pids PID: the process-driver sandboxes (sand-supervisor children) of sandd PID.
sandbox_pids() {
    local t c
    for t in /proc/"$1"/task/*/children; do
        for c in $(cat "$t" 2>/dev/null); do
            [[ $(cat /proc/"$c"/comm 2>/dev/null) == sand-supervisor ]] && echo "$c"
        done
    done
}

# stop_sandd: SIGTERM the last started sandd, then stop what it left running. The process
# driver's supervisors outlive both SIGTERM and --shutdown-all (see docs/performance.md), so
# the ones this sandd started are stopped by pid afterwards.
stop_sandd() {
    local n=${#SANDD_PIDS[@]}
    ((n > 0)) || return 0
    local pid=${SANDD_PIDS[n - 1]} data=${SANDD_DATAS[n - 1]} sbx s
    sbx=$(sandbox_pids "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    "$BIN/sandd" --shutdown-all --data-dir "$data" >/dev/null 2>&1 || true
    for s in $sbx; do
        [[ $(cat /proc/"$s"/comm 2>/dev/null) == sand-supervisor ]] && kill -TERM "$s" 2>/dev/null
    done
    rm -rf "$data" "$data.yaml" "$data.log"
    unset "SANDD_PIDS[n-1]" "SANDD_DATAS[n-1]"
    SANDD_PIDS=("${SANDD_PIDS[@]}")
    SANDD_DATAS=("${SANDD_DATAS[@]}")
}

stop_all_sandd() {
    while ((${#SANDD_PIDS[@]} > 0)); do
        stop_sandd
    done
}
trap stop_all_sandd EXIT
trap 'exit 130' INT TERM
