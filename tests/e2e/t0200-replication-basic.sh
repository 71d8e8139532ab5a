#!/usr/bin/env bash
# Two nodes over mutual TLS on loopback: connect, declare the new pair
# identical (both disks zero-filled), replicate with nbdcopy, and check:
# the backing files are byte-identical once idle, the Secondary refuses
# clients naming its role, promotion is refused while the peer is Primary,
# and after kill -9 of the Primary the promoted Secondary serves every byte.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy cmp openssl
[[ -x $HACTL ]] || skip "hactl not built"

size=$((64 << 20))
make_pair "$size" cert
start_pair
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
node_is bravo connection Connected || fail "bravo does not say Connected"
assert_eq "$(node_field alpha tls.enabled)" true "alpha tls.enabled"
assert_eq "$(node_field alpha tls.version)" TLSv1.3 "alpha tls.version"
assert_eq "$(node_field alpha tls.peer)" bravo "alpha's authenticated peer"
assert_eq "$(node_field bravo tls.peer)" alpha "bravo's authenticated peer"

# Nobody is UpToDate yet: a plain promotion is refused, a forced one declares
# the pair identical (both disks are zero-filled).
must_fail hactl_on alpha promote
hactl_on alpha promote --force
wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate
assert_eq "$(node_field alpha role)" Primary "alpha's role"
assert_eq "$(node_field bravo peer_role)" Primary "bravo's view of its peer"

# The Secondary refuses clients, and says why.
if nbdinfo --size "nbd+unix:///?socket=$T/bravo.sock" >/dev/null 2>"$T/refused.err"; then
    fail "the Secondary served a client"
fi
grep -q "Secondary" "${HB_LOG[bravo]}" || fail "bravo's log does not name its role in the refusal"

# Promotion is refused (exit 3) while the peer is Primary.
rc=0; hactl_on bravo promote 2>"$T/promote.err" || rc=$?
assert_eq "$rc" 3 "hactl promote exit status on bravo while alpha is Primary"
grep -qi "primary" "$T/promote.err" || fail "refusal does not say the peer is Primary: $(cat "$T/promote.err")"
rc=0; hactl_on bravo promote --force 2>/dev/null || rc=$?
assert_eq "$rc" 3 "hactl promote --force on bravo while alpha is Primary"

# Replicate.
head -c "$size" /dev/urandom >"$T/src.img"
nbdcopy --flush "$T/src.img" "nbd+unix:///?socket=$T/alpha.sock"
assert_same_bytes "$T/src.img" "$T/alpha.img" "alpha's disk"
assert_same_bytes "$T/src.img" "$T/bravo.img" "bravo's disk"
assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes"

# Kill the Primary; the Secondary keeps its data, is promoted, and serves it.
kill -9 "${HB_PID[alpha]}"
wait "${HB_PID[alpha]}" 2>/dev/null || true
unset "HB_PID[alpha]"
wait_for 15 "bravo to notice alpha is gone" node_is bravo connection Connecting
hactl_on bravo promote
assert_eq "$(node_field bravo role)" Primary "bravo's role after promotion"
nbdcopy "nbd+unix:///?socket=$T/bravo.sock" "$T/out.img"
assert_same_bytes "$T/src.img" "$T/out.img" "data read from the promoted bravo"
