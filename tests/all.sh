#!/bin/sh
# SPDX-License-Identifier: MIT
# `make test`: installs what the tests need, builds, and runs every Check
# suite three times -- plain, under AddressSanitizer+UBSan, and under
# ThreadSanitizer -- each time with the MPI backend's tests under mpiexec
# (tests/mpi.sh), then the install check, the licence-line check, the
# short form of the fault-injection soak and the benchmark smoke run.
# Ends with "weft: N passed, N failed"; exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/.." || exit 1
scripts/install-deps.sh || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
total_passed=0
total_failed=0
failed_checks=""

count() { # add the counts a pass left in BUILD_DIR/test-counts
  if [ -f "$1/test-counts" ]; then
    read -r p f < "$1/test-counts"
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
  else
    total_failed=$((total_failed + 1))
    failed_checks="${failed_checks}build of $1 failed
"
  fi
}

build() { # build DIR SANITIZER
  log="$1.log"
  mkdir -p "$1"
  rm -f "$1/test-counts" "$1/test-failures"
  if ! { cmake -S . -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWEFT_SANITIZE="$2" &&
         cmake --build "$1" -j "$jobs"; } > "$log" 2>&1; then
    cat "$log"
    echo "build of $1 failed"
    return 1
  fi
  if grep -q 'warning:' "$log"; then
    grep -A3 'warning:' "$log"
    echo "build of $1 has warnings"
    return 1
  fi
}

one_check() { # one_check NAME COMMAND...: a check outside Check, counted as one test
  name=$1
  shift
  if "$@"; then
    echo "$name: 1 passed, 0 failed"
    total_passed=$((total_passed + 1))
  else
    echo "$name: 0 passed, 1 failed"
    total_failed=$((total_failed + 1))
    failed_checks="$failed_checks$name failed
"
  fi
}

echo "== plain build"
if build build ""; then tests/run.sh build plain; tests/mpi.sh build plain; fi
count build

echo "== AddressSanitizer + UndefinedBehaviorSanitizer"
if build build-asan address; then
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  WEFT_TEST_SANITIZER=address CK_TIMEOUT_MULTIPLIER=3 \
    sh -c 'tests/run.sh build-asan asan; tests/mpi.sh build-asan asan'
fi
count build-asan

echo "== ThreadSanitizer"
if build build-tsan thread; then
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:die_after_fork=0:atexit_sleep_ms=0 \
  WEFT_TEST_SANITIZER=thread CK_TIMEOUT_MULTIPLIER=4 \
    sh -c 'tests/run.sh build-tsan tsan; tests/mpi.sh build-tsan tsan'
fi
count build-tsan

echo "== install, pkg-config and find_package"
one_check install tests/install.sh build

echo "== every source file carries the licence line"
one_check spdx tests/spdx.sh

echo "== fault-injection soak, short form (make soak runs the full one)"
one_check soak tests/soak/short.sh build

echo "== benchmark smoke run (make bench QUICK=1)"
one_check bench_smoke sh -c './build/bench/weft_bench --quick > build/bench-quick.txt 2>&1 || { cat build/bench-quick.txt; exit 1; }'

# Every failure again, last, so the end of the log names what failed.
failures=$(cat build/test-failures build-asan/test-failures build-tsan/test-failures 2>/dev/null
            printf '%s' "$failed_checks")
if [ -n "$failures" ]; then
  echo "== what failed"
  printf '%s\n' "$failures"
fi
echo "weft: $total_passed passed, $total_failed failed"
[ "$total_failed" -eq 0 ]
