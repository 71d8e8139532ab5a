#!/bin/bash
# run-fuzz.sh TARGET CORPUS: one libFuzzer target (a -Dfuzz=true build) for
# HB_FUZZ_SECONDS (default 30) on one core, from the committed CORPUS; new
# inputs go to a directory beside the target, never into the source tree
# (scripts/fuzz.sh --merge adds them). A finding (crash, leak, timeout,
# sanitizer report) fails, and its input stays beside the target.
set -euo pipefail
target=$1 corpus=$2
out=$(dirname "$target")/$(basename "$target").out
mkdir -p "$out/new" "$out/findings"
# libFuzzer's own exit status for a finding is 77, which meson reads as a
# skip: every failure is made 1.
"$target" -max_total_time="${HB_FUZZ_SECONDS:-30}" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -error_exitcode=1 -timeout_exitcode=1 \
    -artifact_prefix="$out/findings/" "$out/new" "$corpus" || exit 1
