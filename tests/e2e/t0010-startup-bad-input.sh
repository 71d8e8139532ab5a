#!/usr/bin/env bash
# Bad input stops nbdkit at start: a normal non-zero exit within a deadline
# and one error line naming the problem. Good input starts and serves.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo timeout truncate

disk=$T/disk.img
truncate -s 16M "$disk"

# bad_start ERE... -- PARAM...: starting with PARAMs fails, one error line
# matching every ERE. (--run true makes a server that did start exit 0.)
bad_start() {
    local -a res=()
    while [[ $1 != -- ]]; do res+=("$1"); shift; done
    shift
    log "expect refusal: hablock $*"
    must_fail timeout -k 5 20 "${NBDKIT[@]}" -U - "$HABLOCK_PLUGIN" "$@" --run true
    assert_one_error_line "$T/must_fail.err" "${res[@]}"
}

bad_start 'unknown|unrecognized|invalid' 'no_such_key' -- disk="$disk" no_such_key=1
bad_start '\bdisk\b' 'missing|required|must' --
bad_start "$T/missing\.img" -- disk="$T/missing.img"
mkdir "$T/adir"
bad_start "$T/adir" 'directory' -- disk="$T/adir"
: >"$T/empty.img"
bad_start 'size 0|empty' -- disk="$T/empty.img"
bad_start '\bio\b' 'floppy' -- disk="$disk" io=floppy
bad_start '\bcache\b' 'sometimes' -- disk="$disk" cache=sometimes
bad_start '\bdisk\b' 'twice|more than once|already|duplicate' -- disk="$disk" disk="$disk"
bad_start '\bio\b' 'twice' -- disk="$disk" io=sync io=sync
bad_start '\bcache\b' 'twice' -- disk="$disk" cache=none cache=writeback

# An unreadable disk. Root reads anything, so drop to nobody for this one.
cp "$disk" "$T/unreadable.img"
chmod 000 "$T/unreadable.img"
if [[ $(id -u) -ne 0 ]]; then
    bad_start "$T/unreadable\.img" -- disk="$T/unreadable.img"
else
    chmod 755 "$T"   # nobody must reach the file, and fail on its mode
    as_nobody=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
    if "${as_nobody[@]}" test -r "$HABLOCK_PLUGIN" 2>/dev/null; then
        NBDKIT=("${as_nobody[@]}" "${NBDKIT[@]}")
        TMPDIR=/tmp bad_start "$T/unreadable\.img" -- disk="$T/unreadable.img"
        NBDKIT=("${NBDKIT[@]:${#as_nobody[@]}}")
    else
        log "note: cannot run the plugin as nobody: unreadable-disk case not run"
    fi
fi

# The happy case: it starts, answers with the right size, stops cleanly.
start_hablock ok disk="$disk"
assert_eq "$(nbdinfo --size "${HB_URI[ok]}")" $((16 << 20)) "size of a good disk"
stop_hablock ok
