#!/bin/bash
# run-fuzz.sh TARGET CORPUS: one libFuzzer target (a -Dfuzz=true build), on
# one core, from the committed CORPUS. With HB_FUZZ_SECONDS, a search of
# that many seconds from a random seed (scripts/fuzz.sh); otherwise
# HB_FUZZ_RUNS inputs from seed HB_FUZZ_SEED (default 1), the same search
# every time, so that a CI run does not pass or fail by luck (the meson
# suite). New inputs go to a directory beside the target, never into the
# source tree (scripts/fuzz.sh --merge adds them). A finding (crash, leak,
# timeout, sanitizer report) fails, and its input stays beside the target.
set -euo pipefail
target=$1 corpus=$2
out=$(dirname "$target")/$(basename "$target").out
mkdir -p "$out/new" "$out/findings"
if [[ -n ${HB_FUZZ_SECONDS:-} ]]; then
    budget=(-max_total_time="$HB_FUZZ_SECONDS")
else
    budget=(-runs="${HB_FUZZ_RUNS:?HB_FUZZ_RUNS or HB_FUZZ_SECONDS}" -seed="${HB_FUZZ_SEED:-1}" -max_total_time=300)
fi
# libFuzzer's own exit status for a finding is 77, which meson reads as a
# skip: every failure is made 1.
"$target" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -error_exitcode=1 -timeout_exitcode=1 -artifact_prefix="$out/findings/" \
    "$out/new" "$corpus" || exit 1
