#!/usr/bin/env bash
# t0260-kernel-nbd-failover: the kernel's NBD client on a replicated pair,
# through a fail-over.
#
# Two nodes on the host, alpha and bravo, replicate over mutual TLS on
# loopback; each exports NBD on its own TCP port on 127.0.0.1 (the VM of
# tests/vm/nbd-vm.sh reaches it as 10.0.2.2). alpha is promoted (--force: a
# new, zero-filled pair).
#
# Boot 1: nbd-client attaches alpha, mkfs.ext4, mount, write files, checksum
# them, `sync`, report the checksums, and the guest ends WITHOUT unmounting
# or disconnecting: the VM powers off with the file system mounted, as a
# crashed machine would leave it. Everything the checksums cover was synced
# (flushed through NBD, so acknowledged by both nodes: invariant 1); the
# journal may hold committed transactions that were never checkpointed.
#
# Host: kill -9 alpha; bravo notices the peer is gone; `hactl promote` (no
# force: bravo's data is UpToDate) makes it Primary.
#
# Boot 2: nbd-client attaches bravo. Because the file system was left
# mounted, `e2fsck -fn` first would report the pending journal as a problem
# and `e2fsck -fy` would hide real damage among its repairs; so the guest
# mounts it (the kernel replays the journal, as any fail-over does), unmounts
# cleanly, and only then requires `e2fsck -fn` to find nothing at all. It then
# mounts again and every checksum of boot 1 must match.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo openssl
[[ -x $HACTL ]] || skip "hactl not built"

vm=$HABLOCK_SRCDIR/tests/vm/nbd-vm.sh
[ -x "$vm" ] || fail "missing $vm"
vm_timeout=120
nfiles=26 # big, odd, d/f0..d/f23
export HABLOCK_VM_CACHE=${HABLOCK_VM_CACHE:-$HABLOCK_BUILDDIR/tests/vm-cache}

run_vm() { # GUEST_SCRIPT OUT
	local st=0
	HABLOCK_VM_OUT=$2 "$vm" "$1" "$vm_timeout" >"$1.console" 2>&1 || st=$?
	case $st in
	0) ;;
	77) cat "$1.console" >&2; exit 77 ;;
	124) tail -n 40 "$1.console" >&2; fail "the VM timed out after ${vm_timeout}s" ;;
	*) tail -n 40 "$1.console" >&2; fail "the guest script $1 failed with status $st" ;;
	esac
}

guest_prelude() {
	cat <<'EOF'
set -u
die() { echo "guest FAIL: $*"; exit 1; }
wait_for() { # SECONDS CMD...
	n=0 limit=$(($1 * 20)); shift
	until "$@"; do
		n=$((n + 1)); [ $n -lt $limit ] || return 1
		usleep 50000
	done
}
has_size() { s=$(blockdev --getsize64 "$1" 2>/dev/null) && [ "${s:-0}" -gt 0 ]; }
attach() { # DEV PORT
	nbd-client -t 20 -N "" 10.0.2.2 "$2" "$1" || die "nbd-client 10.0.2.2 $2 $1: status $?"
	wait_for 10 has_size "$1" || die "$1 has no size after attach"
}
EOF
}

SECONDS=0
make_pair $((64 << 20)) cert
start_hablock --tcp --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha
start_hablock --tcp --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo
[[ -n ${HB_PORT[alpha]:-} && -n ${HB_PORT[bravo]:-} && ${HB_PORT[alpha]} != "${HB_PORT[bravo]}" ]] ||
	fail "start_hablock --tcp --ctl gave no port or one port for both: '${HB_PORT[alpha]:-}' '${HB_PORT[bravo]:-}'"
wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
hactl_on alpha promote --force
wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate
nbdinfo --size "${HB_URI[alpha]}" >/dev/null || fail "the Primary alpha does not serve NBD on TCP"
if nbdinfo --size "${HB_URI[bravo]}" >/dev/null 2>&1; then
	fail "the Secondary bravo served an NBD client on TCP"
fi
log "pair up: alpha Primary on NBD port ${HB_PORT[alpha]}, bravo Secondary on ${HB_PORT[bravo]} (${SECONDS}s)"

# --- boot 1: ext4 on alpha, files, sync, power off with it mounted
{
	guest_prelude
	cat <<EOF
dev=/dev/nbd0 mnt=/mnt/r
attach \$dev ${HB_PORT[alpha]}
echo "guest: attached alpha (10.0.2.2:${HB_PORT[alpha]}) as \$dev"
EOF
	cat <<'EOF'
# Inode tables and journal written now, not by ext4lazyinit after the sync.
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 $dev || die "mkfs.ext4: status $?"
mkdir -p $mnt
mount -t ext4 $dev $mnt || die "mount $dev"
mkdir $mnt/d
head -c 3145728 /dev/urandom >$mnt/big || die "write big"
head -c 1234567 /dev/urandom >$mnt/odd || die "write odd"
i=0
while [ $i -lt 24 ]; do
	head -c $((i * 5171 + 1)) /dev/urandom >$mnt/d/f$i || die "write d/f$i"
	i=$((i + 1))
done
(cd $mnt && find . -type f ! -path './lost+found/*' | sort | xargs sha256sum) >/tmp/sums || die "sha256sum"
sync || die "sync"
cat /tmp/sums >/dev/hostout
echo "guest: $(wc -l </tmp/sums) files synced; leaving $mnt mounted and $dev attached"
EOF
} >"$T/guest1.sh"
run_vm "$T/guest1.sh" "$T/sums1"
n=$(grep -c '^[0-9a-f]\{64\}  \./' "$T/sums1" || true)
[[ $n -eq $nfiles ]] || { cat "$T/sums1" >&2; fail "boot 1 reported $n checksums, expected $nfiles"; }
log "boot 1: $n files written and synced through alpha (${SECONDS}s)"

# --- the failure: kill -9 the Primary; promote the Secondary (no force)
kill -9 "${HB_PID[alpha]}"
wait "${HB_PID[alpha]}" 2>/dev/null || true
unset "HB_PID[alpha]"
wait_for 15 "bravo to notice alpha is gone" node_is bravo connection Connecting
assert_eq "$(node_field bravo disk)" UpToDate "bravo's disk after losing alpha"
hactl_on bravo promote
assert_eq "$(node_field bravo role)" Primary "bravo's role after promotion"
log "alpha killed, bravo promoted (${SECONDS}s)"

# --- boot 2: attach bravo, replay the journal, strict fsck, verify
{
	guest_prelude
	echo "cat >/tmp/sums <<'SUMS'"
	cat "$T/sums1"
	echo "SUMS"
	cat <<EOF
dev=/dev/nbd0 mnt=/mnt/r
attach \$dev ${HB_PORT[bravo]}
echo "guest: attached bravo (10.0.2.2:${HB_PORT[bravo]}) as \$dev"
EOF
	cat <<'EOF'
mkdir -p $mnt
# Left mounted by boot 1: the kernel replays the journal here.
mount -t ext4 $dev $mnt || die "mount $dev (journal replay)"
dmesg | grep -i 'recovery complete' >/dev/null && echo "guest: the kernel replayed the journal" ||
	echo "guest: no journal replay was needed"
umount $mnt || die "umount after the journal replay"
e2fsck -fn $dev || die "e2fsck -fn after the journal replay: status $?"
mount -t ext4 -o ro $dev $mnt || die "mount $dev again"
(cd $mnt && sha256sum -c /tmp/sums >/tmp/check) ||
	{ grep -v ': OK$' /tmp/check; die "checksums differ on bravo"; }
echo "verified $(grep -c ': OK$' /tmp/check)" >/dev/hostout
umount $mnt || die "umount"
nbd-client -d $dev || die "nbd-client -d $dev"
EOF
} >"$T/guest2.sh"
run_vm "$T/guest2.sh" "$T/out2"
assert_eq "$(cat "$T/out2")" "verified $nfiles" "files verified on bravo"
grep -h '^guest:' "$T/guest1.sh.console" "$T/guest2.sh.console" | sed 's/^/    /' >&2 || true
assert_eq "$(node_field bravo role)" Primary "bravo's role at the end"
log "PASS: $nfiles files intact on bravo after kill -9 of alpha (${SECONDS}s)"
