#!/usr/bin/env bash
# A Primary whose own disk fails a flush (the debug flag
# hablock.fail_local_flush: the pages it was given could not be written
# back, while the peer's flush succeeded) must not go on as if the replicas
# were the same: its disk becomes Failed, it serves nothing more (a read
# could return what the failed write-back left), the peer hears it, and the
# peer, which holds every acknowledged write, is promoted in its place and
# does not count the failed node as a replica.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy
[[ -x $HACTL ]] || skip "hactl not built"

size=$((16 << 20))
make_pair "$size" cert
start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha -Dhablock.fail_local_flush=1
start_hablock --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
hactl_on alpha promote --force
wait_for 10 "bravo to be UpToDate" node_is bravo disk UpToDate

head -c "$size" /dev/urandom >"$T/src.img"
# The writes are acknowledged; the flush that ends the copy fails.
if nbdcopy --flush "$T/src.img" "nbd+unix:///?socket=$T/alpha.sock" 2>"$T/copy.err"; then
  fail "the client's flush succeeded on a disk that failed it"
fi
assert_eq "$(node_field alpha disk)" Failed "alpha's disk"
assert_grep "the local disk failed a client's FLUSH" "${HB_LOG[alpha]}" "alpha's log"
assert_grep "the peer holds every acknowledged write: demote this node and promote the peer" \
    "${HB_LOG[alpha]}" "alpha's advice"
wait_for 10 "bravo to hear that alpha's disk failed" node_is bravo peer_disk Failed
# alpha serves nothing more: not to a new client, nor its reads.
if nbdinfo "nbd+unix:///?socket=$T/alpha.sock" >/dev/null 2>&1; then
  fail "a client reached alpha, whose disk is Failed"
fi
# Not promotable again, even forced.
hactl_on alpha demote
rc=0; hactl_on alpha promote --force 2>"$T/promote.err" || rc=$?
assert_eq "$rc" 3 "hactl promote --force on a Failed disk (exit status)"
assert_grep "disk is Failed" "$T/promote.err" "the refusal"
# bravo takes over with every write the client was told was done, and
# goes on alone: alpha is no replica.
hactl_on bravo promote
assert_eq "$(node_field bravo role)" Primary "bravo's role"
assert_eq "$(node_field bravo connection)" StandAlone "bravo's connection"
assert_eq "$(node_field bravo out_of_sync_bytes)" "$size" "bravo's out_of_sync_bytes"
assert_grep "the peer's disk is Failed" "${HB_LOG[bravo]}" "bravo's log"
nbdcopy "nbd+unix:///?socket=$T/bravo.sock" "$T/out.img"
assert_same_bytes "$T/src.img" "$T/out.img" "data read back from bravo"
