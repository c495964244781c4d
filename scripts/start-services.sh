#!/usr/bin/env bash
# Starts the system services the tests and the demo need and that sand does not start itself:
# dockerd (sandd starts its own redis-server and embedded Kafka). Idempotent.
set -euo pipefail
if ! command -v dockerd >/dev/null 2>&1; then
  echo "start-services: dockerd is not installed (scripts/install-deps.sh installs docker.io)" >&2
  exit 1
fi
if curl -s --max-time 2 --unix-socket /var/run/docker.sock http://d/_ping 2>/dev/null | grep -q OK; then
  exit 0
fi
echo "start-services: starting dockerd"
nohup dockerd >/var/log/sand-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  if curl -s --max-time 1 --unix-socket /var/run/docker.sock http://d/_ping 2>/dev/null | grep -q OK; then
    exit 0
  fi
  sleep 0.5
done
echo "start-services: dockerd did not answer within 30 s (see /var/log/sand-dockerd.log)" >&2
exit 1
