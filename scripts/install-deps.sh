#!/usr/bin/env bash
# Installs every Debian package that building, testing and running sand needs. Idempotent: when
# everything is present it installs nothing and touches no network.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libuv1-dev libhiredis-dev librdkafka-dev libjansson-dev libyaml-dev libcurl4-openssl-dev
  libarchive-dev libhttp-parser-dev libcmocka-dev
  python3 python3-dev libpython3.11-dev zlib1g-dev libexpat1-dev python3-pil
  default-jdk-headless
  redis-server docker.io
  clang clang-format libclang-rt-14-dev
  wrk python3-matplotlib python3-confluent-kafka procps curl
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
