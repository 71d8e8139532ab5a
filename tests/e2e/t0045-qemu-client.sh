#!/usr/bin/env bash
# QEMU's own NBD client (its block/nbd.c: a third implementation, besides
# libnbd and the kernel's) against the plugin, for each io x cache:
#  - qemu-img convert writes a sparse image into the export;
#  - qemu-io writes patterns (aligned, unaligned, FUA), write-zeroes with
#    and without unmap, a discard and a flush, and reads each range back
#    against the pattern it must hold (qemu-io fails on a mismatch);
#  - the same edits applied to a local model file: the backing file, and
#    qemu-img compare of the export, must equal it;
#  - qemu-img map: contiguous extents over the whole export, every one
#    reported zero reads as zeroes in the model, the discarded range is
#    reported zero and unallocated;
#  - qemu-img convert copies the export out: equal to the model, sparse.
# Then the same client on the Primary of a replicated pair over TLS: both
# nodes' disks equal the model.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo qemu-img qemu-io cmp truncate dd stat openssl /usr/bin/python3

MIB=$((1 << 20))
SIZE=$((64 * MIB))

# The source image: sparse, two islands of random data.
truncate -s "$SIZE" "$T/src.img"
dd if=/dev/urandom of="$T/src.img" bs=64K seek=16 count=4 conv=notrunc status=none
dd if=/dev/urandom of="$T/src.img" bs=4K seek=$((30 * 256 + 5)) count=3 conv=notrunc status=none

# The edits: qemu-io commands, and what each leaves (offset, length, byte).
EDITS=(
    "write -P 0xab $((8 * MIB)) 65536"
    "write -P 0xcd $((8 * MIB + 4103)) 5000"
    "write -z $((9 * MIB)) 131072"
    "write -z -u $((10 * MIB)) 65536"
    "discard $((11 * MIB)) 65536"
    "write -f -P 0xef $((12 * MIB)) 4096"
    "write -P 0x5a $((SIZE - 3000)) 3000"
    "flush"
)
READS=(
    "read -P 0xab $((8 * MIB)) 4103"
    "read -P 0xcd $((8 * MIB + 4103)) 5000"
    "read -P 0xab $((8 * MIB + 9103)) $((65536 - 9103))"
    "read -P 0 $((9 * MIB)) 131072"
    "read -P 0 $((10 * MIB)) 65536"
    "read -P 0 $((11 * MIB)) 65536"
    "read -P 0xef $((12 * MIB)) 4096"
    "read -P 0x5a $((SIZE - 3000)) 3000"
)
# model FILE: apply the edits to a plain file (a discard reads as zeroes here:
# the plugin punches a hole).
model() {
    /usr/bin/python3 - "$1" <<PY
import sys
f = open(sys.argv[1], "r+b")
for off, n, b in [($((8 * MIB)), 65536, 0xab), ($((8 * MIB + 4103)), 5000, 0xcd),
                  ($((9 * MIB)), 131072, 0), ($((10 * MIB)), 65536, 0),
                  ($((11 * MIB)), 65536, 0), ($((12 * MIB)), 4096, 0xef),
                  ($((SIZE - 3000)), 3000, 0x5a)]:
    f.seek(off)
    f.write(bytes([b]) * n)
PY
}
cp --sparse=always "$T/src.img" "$T/model.img"
model "$T/model.img"

# qemu_io URI CMD...: run qemu-io; any failure (a pattern mismatch too) fails.
qemu_io() {
    local uri=$1 out rc=0
    shift
    local -a args=()
    local c
    for c in "$@"; do args+=(-c "$c"); done
    out=$(qemu-io -f raw "${args[@]}" "$uri" 2>&1) || rc=$?
    if (( rc != 0 )) || grep -qi 'fail\|error' <<<"$out"; then
        fail "qemu-io on $uri (status $rc): $(grep -i 'fail\|error' <<<"$out" | head -3)"
    fi
}

# check_map URI: qemu-img map against the model.
check_map() {
    qemu-img map -f raw --output=json "$1" >"$T/map.json"
    /usr/bin/python3 - "$T/map.json" "$T/model.img" "$SIZE" "$((11 * MIB))" <<'PY' ||
import json, sys
extents = json.load(open(sys.argv[1]))
model = open(sys.argv[2], "rb").read()
size, discarded = int(sys.argv[3]), int(sys.argv[4])
pos, zeros = 0, 0
for e in extents:
    start, n = e["start"], e["length"]
    if start != pos or n <= 0:
        sys.exit(f"extent {e} after one ending at {pos}")
    if e["zero"]:
        zeros += 1
        if any(model[start:start + n]):
            sys.exit(f"extent {e} is zero, but the model has data there")
    if start <= discarded < start + n and (not e["zero"] or e["data"]):
        sys.exit(f"the discarded range is in {e}: expected zero, no data")
    pos = start + n
if pos != size:
    sys.exit(f"the extents end at {pos}, the export at {size}")
if zeros == 0:
    sys.exit("no zero extent in a sparse export")
print(f"qemu-img map: {len(extents)} extents, {zeros} zero")
PY
        fail "qemu-img map of $1: $(cat "$T/map.json" | head -c 600)"
}

edit_and_check() {   # URI WHAT
    local uri=$1 what=$2
    qemu-img convert -n -f raw -O raw "$T/src.img" "$uri"
    qemu_io "$uri" "${EDITS[@]}"
    qemu_io "$uri" "${READS[@]}"
    qemu-img compare -f raw -F raw "$uri" "$T/model.img" >/dev/null ||
        fail "qemu-img compare: the export differs from the model ($what)"
}

check_standalone() {   # IO CACHE
    local io=$1 cache=$2 disk=$T/disk.img alloc
    rm -f "$disk" "$T/out.img"
    truncate -s "$SIZE" "$disk"
    start_hablock q disk="$disk" io="$io" cache="$cache"
    edit_and_check "${HB_URI[q]}" "io=$io cache=$cache"
    check_map "${HB_URI[q]}"
    qemu-img convert -f raw -O raw "${HB_URI[q]}" "$T/out.img"
    assert_same_bytes "$T/model.img" "$T/out.img" "qemu-img convert out (io=$io cache=$cache)"
    alloc=$(( $(stat -c '%b * %B' "$T/out.img") ))
    (( alloc <= 4 * MIB )) ||
        fail "qemu-img's copy of a sparse export has $alloc bytes allocated (io=$io cache=$cache)"
    stop_hablock q
    assert_same_bytes "$T/model.img" "$disk" "backing file (io=$io cache=$cache)"
}

for_each_backend check_standalone

# A replicated Primary, QEMU as its client.
[[ -x $HACTL ]] || skip "hactl not built: the replicated case did not run"
make_pair "$SIZE" cert
start_pair
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
hactl_on alpha promote --force
wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate
edit_and_check "nbd+unix:///?socket=$T/alpha.sock" "replicated Primary"
check_map "nbd+unix:///?socket=$T/alpha.sock"
assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes"
assert_same_bytes "$T/model.img" "$T/alpha.img" "alpha's disk"
assert_same_bytes "$T/model.img" "$T/bravo.img" "bravo's disk"
stop_hablock alpha
stop_hablock bravo
