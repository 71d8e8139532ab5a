#!/usr/bin/env bash
# What the server advertises: size, flags, block sizes; and --dump-plugin.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo truncate /usr/bin/python3

# --dump-plugin names the backends built in (all four unless the build
# turned one off; hybrid needs a loop, io_uring's or libaio's).
expected=sync
grep -q '#define HAVE_LIBURING 1' "$HABLOCK_BUILDDIR/hb-build.h" && expected+=" uring"
grep -q '#define HAVE_LIBAIO 1' "$HABLOCK_BUILDDIR/hb-build.h" && expected+=" aio"
[[ $expected == sync ]] || expected+=" hybrid"
"${NBDKIT[@]}" "$HABLOCK_PLUGIN" --dump-plugin >"$T/dump"
assert_grep '^name=hablock$' "$T/dump" "--dump-plugin"
assert_grep '^thread_model=parallel$' "$T/dump" "--dump-plugin thread model"
assert_eq "$(hablock_backends)" "$expected" "hablock_io_backends in --dump-plugin"

# check_info SIZE CACHE: serve a file of SIZE bytes and check nbdinfo --json.
check_info() {
    local size=$1 cache=$2
    truncate -s "$size" "$T/disk-$size.img"
    start_hablock info disk="$T/disk-$size.img" cache="$cache"
    nbdinfo --json "${HB_URI[info]}" >"$T/info.json"
    /usr/bin/python3 - "$T/info.json" "$size" <<'EOF' || fail "nbdinfo --json (size $size, cache=$cache): $(cat "$T/info.json")"
import json, sys
info = json.load(open(sys.argv[1]))
export = info["exports"][0]
expected = {
    "export-size": int(sys.argv[2]),
    "is_read_only": False,
    "can_flush": True, "can_fua": True, "can_trim": True, "can_zero": True,
    "can_fast_zero": True, "can_multi_conn": True, "can_cache": True,
    "block_size_minimum": 1, "block_size_preferred": 4096,
}
bad = [f"{k}: expected {v!r}, got {export.get(k, 'nothing')!r}"
       for k, v in expected.items() if export.get(k) != v]
for line in bad:
    print(line, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
    stop_hablock info
}

for cache in none writeback; do
    check_info $((64 << 20)) "$cache"
    check_info $(((1 << 20) + 12345)) "$cache"   # not a multiple of any block
done
