#!/usr/bin/env bash
# The main job: installs what is missing, builds sand, starts sandd with its embedded defaults
# (its own redis-server and Kafka; Docker sandboxes when dockerd answers), deploys
# examples/image-pipeline, invokes it, and prints the result and the per-step timeline.
# Re-running it reuses the running sandd.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA_DIR=${SAND_DATA_DIR:-/var/lib/sand}
LISTEN=${SAND_LISTEN:-127.0.0.1:8080}

scripts/install-deps.sh
scripts/start-services.sh || echo "demo: no Docker daemon; sandd will use the process driver" >&2

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
BIN=$ROOT/build/bin

export SAND_SERVER=http://$LISTEN
if ! curl -sf --max-time 2 "$SAND_SERVER/healthz" >/dev/null 2>&1; then
  echo "demo: starting sandd (data dir $DATA_DIR, listening on $LISTEN; log: $DATA_DIR/sandd.log)"
  "$BIN/sandd" --data-dir "$DATA_DIR" --listen "$LISTEN"
  for _ in $(seq 1 100); do
    curl -sf --max-time 1 "$SAND_SERVER/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
export SAND_API_KEY=$(cat "$DATA_DIR/api.key")

"$BIN/sandctl" deploy examples/image-pipeline
echo
echo "demo: invoking image-pipeline/process"
"$BIN/sandctl" invoke image-pipeline process -d '{"image": "sample.jpg"}'
echo
ID=$("$BIN/sandctl" invoke image-pipeline process --async -d '{"image": "sample.jpg"}')
for _ in $(seq 1 100); do
  "$BIN/sandctl" --json get "$ID" | grep -q '"status": *"running"' || break
  sleep 0.1
done
"$BIN/sandctl" get "$ID" --trace
echo
echo "demo: sandd keeps running at $SAND_SERVER (stop: kill \$(pgrep -x sandd); everything it started:"
echo "      $BIN/sandd --shutdown-all --data-dir $DATA_DIR)"
