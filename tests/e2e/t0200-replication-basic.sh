#!/usr/bin/env bash
# Two nodes over mutual TLS on loopback: connect, declare the new pair
# identical (both disks zero-filled), replicate with nbdcopy, and check:
# the backing files are byte-identical once idle, the Secondary refuses
# clients naming its role, promotion is refused while the peer is Primary,
# a trim is a hole on both nodes and in the Primary's block status, a
# client kept through a forced demotion is served nothing more, even
# once its node is Primary again, and after kill -9 of the Primary the
# promoted Secondary serves every byte.
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
if hablock_backends | grep -qw uring; then
    assert_eq "$(node_field alpha loop_backend)" uring "alpha's loop_backend"
fi

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

# A client is told which resource and node it reached.
nbdinfo "nbd+unix:///?socket=$T/alpha.sock" >"$T/alpha.info"
assert_grep '^[[:space:]]*description: hablock: resource r0, node alpha$' "$T/alpha.info" "nbdinfo on alpha"

# Replicate.
head -c "$size" /dev/urandom >"$T/src.img"
nbdcopy --flush "$T/src.img" "nbd+unix:///?socket=$T/alpha.sock"
assert_same_bytes "$T/src.img" "$T/alpha.img" "alpha's disk"
assert_same_bytes "$T/src.img" "$T/bravo.img" "bravo's disk"
assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes"

# A trim of [8 MiB, 9 MiB) on the Primary: a hole on both nodes (it is
# replicated as a zero that may punch), which the Primary's block status
# reports; the disks stay byte-identical.
if /usr/bin/python3 -c 'import nbd' 2>/dev/null; then
    /usr/bin/python3 - "$T/alpha.sock" "$T/alpha.img" "$T/bravo.img" <<'PY' ||
import nbd, os, sys
sock, disks = sys.argv[1], sys.argv[2:]
lo, n = 8 << 20, 1 << 20
h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_unix(sock)
h.trim(n, lo)
h.flush()
got = []
h.block_status(n, lo, lambda m, o, e, err: got.extend(e[:2]), nbd.CMD_FLAG_REQ_ONE)
if got[0] < n or got[1] != nbd.STATE_HOLE | nbd.STATE_ZERO:
    sys.exit(f"block status of the trimmed range: {got}, expected a hole of {n} bytes")
for path in disks:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.lseek(fd, lo, os.SEEK_DATA)
    finally:
        os.close(fd)
    if data < lo + n:
        sys.exit(f"{path}: data at {data} inside the trimmed range")
h.shutdown()
PY
        fail "a replicated trim did not leave a hole on both nodes"
    dd if=/dev/zero of="$T/src.img" bs=1M seek=8 count=1 conv=notrunc status=none
    assert_same_bytes "$T/src.img" "$T/alpha.img" "alpha's disk after the trim"
    assert_same_bytes "$T/src.img" "$T/bravo.img" "bravo's disk after the trim"
    log "ok: a replicated trim is a hole on both nodes, and in the Primary's block status"
else
    log "note: python3-libnbd missing: the replicated trim check did not run"
fi

# A client kept through a forced demotion: refused (EPERM) at once, and
# still after bravo was Primary and alpha is Primary again (what it holds
# predates bravo's time as Primary); a new client is served.
if /usr/bin/python3 -c 'import nbd' 2>/dev/null; then
    /usr/bin/python3 - "$HACTL" "$T/alpha.ctl" "$T/bravo.ctl" "$T/alpha.sock" <<'PY' ||
import errno, nbd, subprocess, sys, time
hactl, actl, bctl, asock = sys.argv[1:5]
def ctl(sock, *args, until=10):
    end = time.monotonic() + until
    while True:
        r = subprocess.run([hactl, "--socket", sock, *args], capture_output=True, text=True)
        if r.returncode == 0:
            return
        if time.monotonic() > end:
            sys.exit(f"hactl {' '.join(args)}: {r.stderr.strip()}")
        time.sleep(0.1)     # the peer's STATE may still be on its way
def refused(h, what):
    for op, call in (("a read", lambda: h.pread(4096, 0)),
                     ("block status", lambda: h.block_status(4096, 0, lambda *a: 0))):
        try:
            call()
        except nbd.Error as e:
            if e.errnum != errno.EPERM:
                sys.exit(f"{what}: the stale client's {op} got {e} (expected EPERM)")
            continue
        sys.exit(f"{what}: the stale client was served {op}")
old = nbd.NBD()
old.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
old.connect_unix(asock)
old.pread(4096, 0)
ctl(actl, "demote", "--force")
refused(old, "after the forced demotion")
ctl(bctl, "promote")
ctl(bctl, "demote")
ctl(actl, "promote")
refused(old, "with alpha Primary again")
new = nbd.NBD()
new.connect_unix(asock)
new.pread(4096, 0)
new.shutdown()
print("ok")
PY
        fail "a client kept through a forced demotion was served again"
    log "ok: the client kept through the forced demotion is refused, also after alpha is Primary again"
else
    log "note: python3-libnbd missing: the stale-client check did not run"
fi
assert_eq "$(node_field alpha role)" Primary "alpha's role after the stale-client check"
wait_for 10 "bravo to see alpha Primary again" node_is bravo peer_role Primary

# Kill the Primary; the Secondary keeps its data, is promoted, and serves it.
kill -9 "${HB_PID[alpha]}"
wait "${HB_PID[alpha]}" 2>/dev/null || true
unset "HB_PID[alpha]"
wait_for 15 "bravo to notice alpha is gone" node_is bravo connection Connecting
hactl_on bravo promote
assert_eq "$(node_field bravo role)" Primary "bravo's role after promotion"
nbdinfo "nbd+unix:///?socket=$T/bravo.sock" >"$T/bravo.info"
assert_grep '^[[:space:]]*description: hablock: resource r0, node bravo$' "$T/bravo.info" "nbdinfo on bravo"
nbdcopy "nbd+unix:///?socket=$T/bravo.sock" "$T/out.img"
assert_same_bytes "$T/src.img" "$T/out.img" "data read from the promoted bravo"
