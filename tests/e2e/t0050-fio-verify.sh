#!/usr/bin/env bash
# fio through its nbd engine, for each io x cache: random writes at queue
# depth 16 with crc32c in every block, then every block read back and
# verified. Two jobs: block-aligned sizes, and 512-byte-granular ones, whose
# neighbours in one 4 KiB block are written concurrently (read-modify-write
# under cache=none must serialize them).
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo fio truncate /usr/bin/python3
skip_unless "fio has no nbd engine" sh -c 'fio --enghelp=nbd | grep -q uri'

size=$((64 << 20))
extra=()        # nbdkit options for the server

fio_verify() {   # NAME IO CACHE FIO-OPTION...
    local name=$1 io=$2 cache=$3; shift 3
    rm -f "$T/disk.img"
    truncate -s "$size" "$T/disk.img"
    start_hablock fio "${extra[@]}" disk="$T/disk.img" io="$io" cache="$cache"
    # The report goes to a file: the engine prints to stdout on connecting.
    timeout -k 5 60 fio --name="$name" --ioengine=nbd --uri="${HB_URI[fio]}" \
        --rw=randwrite --iodepth=16 --size="$size" \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output-format=json --output="$T/fio.json" "$@" >"$T/fio.out" 2>&1 ||
        fail "fio $name (io=$io cache=$cache) exited non-zero: $(tail -n 20 "$T/fio.out")"
    /usr/bin/python3 - "$T/fio.json" "$size" <<'EOF' ||
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
size = int(sys.argv[2])
got = (job["error"], job["write"]["io_bytes"], job["read"]["io_bytes"])
if got != (0, size, size):
    sys.exit(f"error, written, verified: expected (0, {size}, {size}), got {got}")
EOF
        fail "fio $name (io=$io cache=$cache): $(tail -n 20 "$T/fio.out")"
    stop_hablock fio
}

fio_each() {   # IO CACHE
    fio_verify aligned "$@" --bsrange=4k-128k
    fio_verify unaligned "$@" --bsrange=512-36k --blockalign=512
}

for_each_backend fio_each

# The opt-in page-cache write lock, under the same concurrent writes.
extra=(-Dhablock.write_lock=1)
log "== io=sync cache=writeback -D hablock.write_lock=1"
fio_each sync writeback
