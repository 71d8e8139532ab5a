#!/usr/bin/env bash
# NBD command semantics for each io x cache, checked against a model of the
# disk by semantics.py: write, read, flush, FUA, trim, zero (may-trim, no
# hole, fast), unaligned commands, cache, the end of the device, refused
# out-of-range requests and multi-conn.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo head /usr/bin/python3
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

# Random contents, so that zeros read back mean something; a size that
# ends in a partial block.
head -c $(((8 << 20) + 1234)) /dev/urandom >"$T/initial.img"

check_semantics() {   # IO CACHE
    cp "$T/initial.img" "$T/disk.img"
    start_hablock sem disk="$T/disk.img" io="$1" cache="$2"
    /usr/bin/python3 "$HABLOCK_SRCDIR/tests/e2e/semantics.py" "${HB_URI[sem]}" "$T/disk.img" ||
        fail "semantics.py (io=$1 cache=$2)"
    stop_hablock sem
}

for_each_backend check_semantics
