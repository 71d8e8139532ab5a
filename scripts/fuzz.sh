#!/bin/bash
# Coverage-guided fuzzing of the parsers of untrusted input (tests/fuzz/):
# builds build-fuzz with clang, libFuzzer, ASan and UBSan, and runs each
# target for SECONDS on one core from its committed corpus.
#   scripts/fuzz.sh [--time SECONDS] [--merge] [TARGET...]
# TARGETs: wire config json ctl params (default: all). --merge adds the
# inputs that found new coverage to tests/fuzz/corpus/TARGET (minimized by
# libFuzzer's -merge=1) after the runs. Exit status: 0 nothing found, 1 a
# finding (its input is in build-fuzz/tests/fuzz/fuzz-TARGET.out/findings/),
# 2 usage, 3 setup (no clang or no libFuzzer runtime: Debian's clang and
# libclang-rt-14-dev).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
seconds=60 merge=0 targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) seconds=${2:?--time needs SECONDS}; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(wire config json ctl params)
for t in "${targets[@]}"; do
  [ -d "tests/fuzz/corpus/$t" ] || { echo "fuzz.sh: unknown target $t" >&2; exit 2; }
done
command -v clang >/dev/null || { echo "fuzz.sh: clang not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 3; }
# clang prints the bare name back when it has no such file.
[ -f "$(clang -print-file-name="libclang_rt.fuzzer-$(uname -m).a")" ] ||
  { echo "fuzz.sh: clang has no libFuzzer runtime (apt-get install libclang-rt-14-dev)" >&2; exit 3; }

if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false >/dev/null ||
    { echo "fuzz.sh: meson setup build-fuzz failed" >&2; exit 3; }
fi
ninja -C build-fuzz >/dev/null || { echo "fuzz.sh: build failed (ninja -C build-fuzz)" >&2; exit 3; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
rc=0
for t in "${targets[@]}"; do
  echo "=== fuzz-$t: $seconds s"
  HB_FUZZ_SECONDS=$seconds bash tests/fuzz/run-fuzz.sh "build-fuzz/tests/fuzz/fuzz-$t" \
      "tests/fuzz/corpus/$t" 2>"build-fuzz/fuzz-$t.log" || {
    rc=1
    echo "fuzz-$t: FINDING: $(ls build-fuzz/tests/fuzz/fuzz-$t.out/findings/ | head -3 | tr '\n' ' ')"
    grep -m5 -E 'ERROR|runtime error|SUMMARY' "build-fuzz/fuzz-$t.log" || tail -n 20 "build-fuzz/fuzz-$t.log"
    continue
  }
  grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "build-fuzz/fuzz-$t.log" | tail -n 1
  if [ $merge = 1 ]; then
    build-fuzz/tests/fuzz/fuzz-$t -merge=1 "tests/fuzz/corpus/$t" \
        "build-fuzz/tests/fuzz/fuzz-$t.out/new" 2>>"build-fuzz/fuzz-$t.log" >/dev/null
    echo "fuzz-$t: corpus now $(ls "tests/fuzz/corpus/$t" | wc -l) inputs"
  fi
done
exit $rc
