#!/bin/sh
# Hop latency of a two-step Python workflow (fork with a pre-forked spare, and reuse) and the
# private memory of 50 concurrent sleeping instances, measured by the worker unit test binary.
# Usage: bench/hop/run.sh [BUILD_DIR] [N]   (defaults: build, 1000)
set -e
build=${1:-build}
SAND_BENCH_HOP=${2:-1000} exec "$build/bin/test_worker"
