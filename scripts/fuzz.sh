#!/bin/sh
# Builds the app.yaml fuzzer (clang, libFuzzer, ASan, UBSan) in build-fuzz and runs it over the
# seed corpus in tests/fuzz/corpus. Exits non-zero when the fuzzer finds a crash, a sanitizer
# report or a broken invariant; the input that triggered it is kept in build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [RUNS]      RUNS inputs (default 20000); -1 runs until stopped
#   FUZZ_ARGS="-max_total_time=3600 -jobs=2" scripts/fuzz.sh -1     longer runs: see docs/workflow-yaml.md
set -eu

RUNS=${1:-20000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$ROOT/build-fuzz

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz.sh: clang is needed (Debian package 'clang')" >&2
    exit 2
fi

CC=clang cmake -S "$ROOT" -B "$BUILD" -DSAND_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" --target fuzz_app_yaml -j2

# libFuzzer adds the inputs it finds to the first corpus directory: a scratch one, so the seed
# corpus under version control only changes when someone copies a finding there on purpose.
mkdir -p "$BUILD/corpus/app_yaml" "$BUILD/artifacts"
# shellcheck disable=SC2086 # FUZZ_ARGS holds several options
"$BUILD/bin/fuzz_app_yaml" -runs="$RUNS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$BUILD/artifacts/" -print_final_stats=1 -dict="$ROOT/tests/fuzz/app_yaml.dict" ${FUZZ_ARGS:-} \
    "$BUILD/corpus/app_yaml" "$ROOT/tests/fuzz/corpus"
