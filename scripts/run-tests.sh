#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine: install the
# dependencies, build twice (plain, and with AddressSanitizer +
# UndefinedBehaviorSanitizer), run every suite in both, and end with one line
# "N passed, N failed, N skipped". The full run (no --quick, no meson
# arguments) also builds build-fuzz (clang, libFuzzer, ASan, UBSan) and runs
# each fuzz target for a fixed, seeded search (tests/fuzz/).
#   scripts/run-tests.sh [--quick] [meson test args...]
# --quick runs the plain build only.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
quick=0
if [ "${1:-}" = --quick ]; then quick=1; shift; fi

bash scripts/install-deps.sh
builds=(build)
[ $quick = 1 ] || builds+=(build-asan)
bash scripts/build.sh build
[ $quick = 1 ] || bash scripts/build.sh build-asan -Db_sanitize=address,undefined -Db_lundef=false
if [ $quick = 0 ] && [ $# -eq 0 ]; then
  builds+=(build-fuzz)
  CC=clang bash scripts/build.sh build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
fi

# Sanitizer reports fail the test that triggered them.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

passed=0 failed=0 skipped=0 rc=0
for b in "${builds[@]}"; do
  echo "=== meson test -C $b $*"
  meson test -C "$b" --print-errorlogs "$@" || rc=1
  # meson writes a JSON line per test; count the outcomes from it.
  read -r p f s < <(/usr/bin/python3 - "$b/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(p, f, s)
PY
)
  echo "=== $b: $p passed, $f failed, $s skipped"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ] && [ $rc -eq 0 ]
