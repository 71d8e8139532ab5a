#!/usr/bin/env bash
# Block status (NBD base:allocation) through real clients, for each io x
# cache: nbdinfo --map of a sparse disk shows its holes and its data where
# the file system has them (its own SEEK_DATA/SEEK_HOLE map, read by
# Python, which on ext4 with 4 KiB blocks is exactly the ranges written);
# a trim through nbdsh makes a hole there; nbdcopy out gives an equal copy
# that stays sparse. A block device (a loop device over the same kind of
# file) reports all data, as nbdkit does for a plugin without extents.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy cmp truncate dd stat awk
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

MIB=$((1 << 20))
SIZE=$((64 * MIB))
A=$MIB                        # data [A, A + 128 KiB)
B=$((40 * MIB + 12288))       # data [B, B + 4 KiB)

make_sparse() {   # PATH
    rm -f "$1"
    truncate -s "$SIZE" "$1"
    dd if=/dev/urandom of="$1" bs=64K seek=$((A / 65536)) count=2 conv=notrunc status=none
    dd if=/dev/urandom of="$1" bs=4K seek=$((B / 4096)) count=1 conv=notrunc status=none
}

# map URI: nbdinfo --map as "offset length type" lines.
map() { nbdinfo --map "$1" | awk '{ print $1, $2, $3 }'; }

# fs_map FILE: the same lines from the file system itself (type 3: hole
# and zero, 0: data).
fs_map() {
    /usr/bin/python3 - "$1" <<'PY'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, pos = os.fstat(fd).st_size, 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        data = size
    if data > pos:
        print(pos, data - pos, 3)
        pos = data
        continue
    hole = os.lseek(fd, pos, os.SEEK_HOLE)
    print(pos, hole - pos, 0)
    pos = hole
PY
}

check_map() {   # URI WHAT EXPECTED-LINES...
    local uri=$1 what=$2 got want
    shift 2
    got=$(map "$uri")
    want=$(printf '%s\n' "$@")
    [[ $got == "$want" ]] || fail "$what: nbdinfo --map says
$got
expected
$want"
}

# has_line LINES LINE WHAT: LINE is one of LINES.
has_line() { grep -qxF -- "$2" <<<"$1" || fail "$3: no extent '$2' in
$1"; }

check_extents() {   # IO CACHE
    local io=$1 cache=$2 disk=$T/disk.img alloc
    local -a want
    make_sparse "$disk"
    start_hablock ext disk="$disk" io="$io" cache="$cache"
    nbdinfo "${HB_URI[ext]}" | grep -q 'base:allocation' ||
        fail "base:allocation not offered (io=$io cache=$cache)"
    mapfile -t want < <(fs_map "$disk")
    (( ${#want[@]} >= 3 )) || fail "the file system made no holes in a sparse file: ${want[*]}"
    check_map "${HB_URI[ext]}" "sparse disk (io=$io cache=$cache)" "${want[@]}"

    # trim the first half of the first island: a hole again
    /usr/bin/python3 -c '
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.trim(65536, int(sys.argv[2]))
h.flush()
h.shutdown()' "${HB_URI[ext]}" "$A"
    mapfile -t want < <(fs_map "$disk")
    check_map "${HB_URI[ext]}" "after a trim (io=$io cache=$cache)" "${want[@]}"
    # the trimmed range is a hole (the file system frees whole 64 KiB here)
    has_line "$(map "${HB_URI[ext]}")" "0 $((A + 65536)) 3" "after a trim (io=$io cache=$cache)"

    # nbdcopy out: the same bytes, and the copy keeps the holes
    rm -f "$T/out.img"
    nbdcopy "${HB_URI[ext]}" "$T/out.img"
    assert_same_bytes "$disk" "$T/out.img" "nbdcopy out of a sparse disk (io=$io cache=$cache)"
    alloc=$(( $(stat -c '%b * %B' "$T/out.img") ))
    (( alloc <= MIB )) ||
        fail "nbdcopy's copy of 68 KiB of data in 64 MiB has $alloc bytes allocated (io=$io cache=$cache)"
    stop_hablock ext
}

for_each_backend check_extents

# A block device has no holes to report: all data, in one extent. (Its
# is_rotational is checked here too: t0020 covers files.)
make_sparse "$T/blk.img"
if ! command -v losetup >/dev/null || ! LOOPDEV=$(losetup -f --show "$T/blk.img" 2>/dev/null); then
    log "note: no loop device here: the block-device case is not run"
    exit 0
fi
on_exit "losetup -d $LOOPDEV"
rota=$([[ $(cat "/sys/block/${LOOPDEV#/dev/}/queue/rotational") == 1 ]] && echo true || echo false)
for cache in none writeback; do
    start_hablock blk disk="$LOOPDEV" cache="$cache"
    check_map "${HB_URI[blk]}" "block device (cache=$cache)" "0 $SIZE 0"
    # and whether it spins, as its queue says
    assert_eq "$(nbdinfo --json "${HB_URI[blk]}" | /usr/bin/python3 -c '
import json, sys
print(str(json.load(sys.stdin)["exports"][0]["is_rotational"]).lower())')" "$rota" \
        "is_rotational of $LOOPDEV (cache=$cache)"
    stop_hablock blk
done
