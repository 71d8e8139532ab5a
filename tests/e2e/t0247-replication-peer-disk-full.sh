#!/usr/bin/env bash
# A Secondary whose disk fails writes: its backing file lives on a 2 MiB
# tmpfs (mounted in a private mount namespace that only bravo's nbdkit
# sees) while the device is 16 MiB, so the real kernel answers ENOSPC once
# the tmpfs is full. The client on the Primary sees no error and every byte
# it wrote is on the Primary; the Primary logs which request the peer
# failed, records it as out of sync and goes on alone (StandAlone); the
# Secondary marks its disk Failed, so it cannot be promoted, even forced:
# it does not hold what the Primary acknowledged.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy unshare mount truncate
[[ -x $HACTL ]] || skip "hactl not built"
[[ $(id -u) -eq 0 ]] || skip "needs root to mount a tmpfs in a private mount namespace"
unshare --mount --propagation private sh -c 'mount -t tmpfs -o size=1m tmpfs "$0"' "$T" 2>"$T/unshare.err" ||
    skip "cannot mount a tmpfs in a private mount namespace: $(head -n 1 "$T/unshare.err")"

size=$((16 << 20))
fs=$T/bravo-fs
mkdir -p "$fs"
make_pair "$size" cert
sed -i "/^\[node bravo\]/,/^\[/s|^disk = .*|disk = $fs/bravo.img|" "$T/r0.conf"
grep -q "^disk = $fs/bravo.img\$" "$T/r0.conf" || fail "could not set bravo's disk in $T/r0.conf"

start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha
# unshare and sh exec in place: HB_PID stays nbdkit's. The tmpfs goes away
# with the namespace when nbdkit exits.
start_hablock_under unshare --mount --propagation private \
    sh -c 'mount -t tmpfs -o size=2m tmpfs "$0" && truncate -s 16M "$0/bravo.img" && exec "$@"' "$fs" \
    -- --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
hactl_on alpha promote --force
wait_for 10 "bravo to be UpToDate" node_is bravo disk UpToDate
[[ ! -e $fs/bravo.img ]] || fail "bravo's tmpfs is visible outside its mount namespace"

head -c "$size" /dev/urandom >"$T/src.img"
log_mark alpha
nbdcopy "$T/src.img" "${HB_URI[alpha]}" || fail "the client's copy failed while the peer's disk filled up"
wait_for 10 "alpha to go on alone" node_is alpha connection StandAlone
log_since alpha | grep -Eq "the peer failed WRITE at [0-9]+ \(No space left on device\): its disk is failing; going on alone" ||
    fail "alpha did not log the peer's failed write: $(log_since alpha | tail -n 5)"
log "alpha: $(log_since alpha | grep -m1 'the peer failed')"
assert_eq "$(node_field alpha role)" Primary "alpha's role"
(( $(node_field alpha out_of_sync_bytes) > 0 )) || fail "alpha recorded nothing out of sync"
wait_for 10 "bravo to mark its disk Failed" node_is bravo disk Failed
assert_grep "disk Failed" "${HB_LOG[bravo]}" "bravo's log"

nbdcopy "${HB_URI[alpha]}" "$T/out.img"
assert_same_bytes "$T/src.img" "$T/out.img" "what alpha serves"
assert_same_bytes "$T/src.img" "$T/alpha.img" "alpha's disk"

# bravo does not hold what alpha acknowledged: with alpha gone, bravo is
# not promotable, not even forced.
stop_hablock alpha
wait_for 10 "bravo to lose alpha" node_is bravo connection Connecting
for f in '' --force; do
    rc=0
    hactl_on bravo promote $f >"$T/promote.out" 2>&1 || rc=$?
    (( rc != 0 )) || fail "bravo was promoted${f:+ ($f)} with a Failed disk"
    assert_grep "Failed" "$T/promote.out" "hactl promote $f on bravo"
    log "bravo promote ${f:-(unforced)}: exit $rc: $(head -n 1 "$T/promote.out")"
done
assert_eq "$(node_field bravo role)" Secondary "bravo's role"
stop_hablock bravo
