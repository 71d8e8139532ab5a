#!/usr/bin/env bash
# What the server advertises: size, flags, block sizes, its description, whether the disk
# underneath spins (as lsblk says, on the test's file system and on tmpfs);
# and --dump-plugin.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo truncate findmnt lsblk /usr/bin/python3

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

# rotational DIR: true if the block device holding DIR's file system spins
# (lsblk's ROTA of the device findmnt names by number: a mount's source may
# be /dev/root or a bind mount's path), false when it is on none (tmpfs).
rotational() {
    local mm dev
    mm=$(findmnt -nvo MAJ:MIN -T "$1" | tr -d ' ')
    if [[ -e /sys/dev/block/$mm ]]; then
        dev=/dev/$(basename "$(readlink -f "/sys/dev/block/$mm")")
        [[ $(lsblk -ndo ROTA "$dev" | tr -d ' ') == 1 ]] && echo true || echo false
    else
        echo false
    fi
}

# check_info SIZE CACHE [DIR]: serve a file of SIZE bytes in DIR (default
# $T) and check nbdinfo --json.
check_info() {
    local size=$1 cache=$2 dir=${3:-$T}
    truncate -s "$size" "$dir/disk-$size.img"
    start_hablock info disk="$dir/disk-$size.img" cache="$cache"
    nbdinfo --json "${HB_URI[info]}" >"$T/info.json"
    rm -f "$dir/disk-$size.img"
    /usr/bin/python3 - "$T/info.json" "$size" "$(rotational "$dir")" "disk-$size.img" <<'EOF' || fail "nbdinfo --json (size $size, cache=$cache, in $dir): $(cat "$T/info.json")"
import json, sys
info = json.load(open(sys.argv[1]))
export = info["exports"][0]
expected = {
    "export-size": int(sys.argv[2]),
    "is_read_only": False,
    "can_flush": True, "can_fua": True, "can_trim": True, "can_zero": True,
    "can_fast_zero": True, "can_multi_conn": True, "can_cache": True,
    "block_size_minimum": 1, "block_size_preferred": 4096,
    "is_rotational": sys.argv[3] == "true",
    "description": "hablock: " + sys.argv[4],
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
log "the test's file system is on a rotational device: $(rotational "$T")"
# tmpfs is on no block device (and has no O_DIRECT)
if [[ -d /dev/shm ]]; then
    shm=$(mktemp -d /dev/shm/hablock-t0020.XXXXXX)
    on_exit "rm -rf $shm"
    assert_eq "$(rotational "$shm")" false "tmpfs is rotational to lsblk"
    check_info $((4 << 20)) writeback "$shm"
fi
