#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, starts the services the tests
# need (dockerd), builds with -Werror and runs every test (unit, integration, docker), rebuilds
# with ASan+UBSan and runs the unit and integration tests again, checks formatting, and runs the
# YAML fuzzer for a fixed number of inputs. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=$(nproc)

step() { printf '\n==== %s ====\n' "$*"; }

step "dependencies"
scripts/install-deps.sh
scripts/start-services.sh

step "format (clang-format --dry-run --Werror)"
git ls-files -- '*.c' '*.h' | grep -v '^tests/fuzz/corpus/' | xargs clang-format --dry-run --Werror

step "build with -Werror"
cmake -S . -B build-ci -DSAND_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-ci -j"$JOBS"

step "all tests (-Werror build)"
ctest --test-dir build-ci --output-on-failure --timeout 600

step "build with ASan+UBSan"
cmake -S . -B build-asan -DSAND_WERROR=ON -DSAND_SANITIZE=address,undefined \
      -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$JOBS"

step "unit and integration tests under ASan+UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:handle_segv=0:allow_user_segv_handler=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0
ctest --test-dir build-asan --output-on-failure --timeout 900 -L 'unit|integration' -LE 'nosan'
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

if [ -x scripts/fuzz.sh ]; then
  step "fuzz app.yaml loader (fixed number of runs)"
  scripts/fuzz.sh 20000
fi
step "all test stages passed"
