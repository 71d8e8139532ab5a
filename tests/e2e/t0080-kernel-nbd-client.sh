#!/usr/bin/env bash
# t0080-kernel-nbd-client: the Linux kernel's own NBD client on top of hablock.
#
# Two servers, one per cache mode (cache=none is O_DIRECT, cache=writeback goes
# through the page cache), each on its own backing file and loopback port. A VM
# (tests/vm/nbd-vm.sh) attaches both with nbd-client and, on each device:
# mkfs.ext4 (discards the device: NBD TRIM), mount -o discard, write files (a
# few MiB, checksums), delete one (online discard), sync, umount, e2fsck -fn,
# disconnect, re-attach, mount, verify the checksums, umount, disconnect.
# On the host, with the servers stopped: e2fsck -fn and debugfs read every file
# straight from the backing files and compare the checksums. Then the servers
# restart on the same files and a second boot attaches, checks and verifies
# again: the data persisted in the backing disk, not in a server's cache.
# Both modes share each boot: two boots (~15 s and ~7 s under TCG), not four.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo debugfs e2fsck truncate sha256sum cmp

vm=$HABLOCK_SRCDIR/tests/vm/nbd-vm.sh
[ -x "$vm" ] || fail "missing $vm"
modes=(none writeback)
disk_size=64M
vm_timeout=150
nfiles=26 # big, odd, d/f0..d/f23 (guest_phase1)

# Several VM tests in one run share the initramfs.
export HABLOCK_VM_CACHE=${HABLOCK_VM_CACHE:-$HABLOCK_BUILDDIR/tests/vm-cache}

declare -A port=()

start_servers() {
	local m
	for m in "${modes[@]}"; do
		start_hablock --tcp "$m" disk="$T/disk-$m" cache="$m"
		port[$m]=${HB_URI[$m]##*:}
		port[$m]=${port[$m]%/}
	done
}

stop_servers() { # each must exit 0 on SIGTERM with no sanitizer report
	local m
	for m in "${modes[@]}"; do
		stop_hablock "$m" || fail "server cache=$m did not stop cleanly"
	done
}

# --- guest scripts: a common prelude plus one phase
guest_prelude() {
	cat <<'EOF'
set -u
die() { echo "guest FAIL: $*"; exit 1; }
wait_for() { # SECONDS CMD...: poll a condition with a deadline
	n=0 limit=$(($1 * 20)); shift
	until "$@"; do
		n=$((n + 1)); [ $n -lt $limit ] || return 1
		usleep 50000
	done
}
has_size() { s=$(blockdev --getsize64 "$1" 2>/dev/null) && [ "${s:-0}" -gt 0 ]; }
is_free() { [ ! -e "/sys/block/${1#/dev/}/pid" ]; }
attach() { # DEV PORT
	nbd-client -t 20 -N "" 10.0.2.2 "$2" "$1" || die "nbd-client 10.0.2.2 $2 $1: status $?"
	wait_for 10 has_size "$1" || die "$1 has no size after attach"
}
detach() { # DEV
	nbd-client -d "$1" || die "nbd-client -d $1: status $?"
	wait_for 10 is_free "$1" || die "$1 still connected after nbd-client -d"
}
fsck_clean() { # DEV WHEN
	e2fsck -fn "$1" || die "e2fsck -fn $1 $2: status $?"
}
EOF
}

guest_phase1() { # writes, checks, re-attaches, checks; reports the checksums
	guest_prelude
	cat <<'EOF'
phase1() { # TAG DEV PORT
	tag=$1 dev=$2 port=$3 mnt=/mnt/$1
	echo "guest: cache=$tag on $dev"
	attach "$dev" "$port"
	mkfs.ext4 -q -F "$dev" || die "mkfs.ext4 $dev: status $?"
	mkdir -p "$mnt"
	mount -t ext4 -o discard "$dev" "$mnt" || die "mount $dev"
	mkdir "$mnt/d"
	head -c 3145728 /dev/urandom >"$mnt/big" || die "write big"
	head -c 1234567 /dev/urandom >"$mnt/odd" || die "write odd"
	i=0
	while [ $i -lt 24 ]; do
		head -c $((i * 5171 + 1)) /dev/urandom >"$mnt/d/f$i" || die "write d/f$i"
		i=$((i + 1))
	done
	head -c 1048576 /dev/urandom >"$mnt/gone" && sync && rm "$mnt/gone" || die "write/rm gone"
	(cd "$mnt" && find . -type f | sort | xargs sha256sum) >"/tmp/$tag.sums" || die "sha256sum"
	sync
	umount "$mnt" || die "umount $mnt"
	fsck_clean "$dev" "after the first mount"
	detach "$dev"
	echo 3 >/proc/sys/vm/drop_caches
	attach "$dev" "$port"
	mount -t ext4 "$dev" "$mnt" || die "mount $dev after re-attach"
	(cd "$mnt" && sha256sum -c "/tmp/$tag.sums" >/tmp/check) ||
		{ grep -v ': OK$' /tmp/check; die "checksums differ after re-attach"; }
	umount "$mnt" || die "umount $mnt after re-attach"
	detach "$dev"
	sed "s|^|$tag |" "/tmp/$tag.sums" >/dev/hostout
}
EOF
	local i=0 m
	for m in "${modes[@]}"; do
		echo "phase1 $m /dev/nbd$i ${port[$m]}"
		i=$((i + 1))
	done
}

guest_phase2() { # attaches, checks and verifies against phase 1's checksums
	guest_prelude
	cat <<'EOF'
phase2() { # TAG DEV PORT
	tag=$1 dev=$2 port=$3 mnt=/mnt/$1
	echo "guest: cache=$tag on $dev, after the server restarted"
	attach "$dev" "$port"
	fsck_clean "$dev" "after the server restarted"
	mkdir -p "$mnt"
	mount -t ext4 "$dev" "$mnt" || die "mount $dev"
	(cd "$mnt" && find . -type f | sort | xargs sha256sum) >"/tmp/$tag.now" || die "sha256sum"
	umount "$mnt" || die "umount $mnt"
	detach "$dev"
	sed "s|^|$tag |" "/tmp/$tag.now" >/dev/hostout
	cmp -s "/tmp/$tag.now" "/tmp/$tag.sums" || {
		echo "expected:"; grep -vxF -f "/tmp/$tag.now" "/tmp/$tag.sums"
		echo "found:"; grep -vxF -f "/tmp/$tag.sums" "/tmp/$tag.now"
		die "checksums differ after the server restarted"
	}
}
EOF
	local i=0 m
	for m in "${modes[@]}"; do
		echo "cat >/tmp/$m.sums <<'SUMS'"
		sed -n "s/^$m //p" "$T/sums1"
		echo "SUMS"
		echo "phase2 $m /dev/nbd$i ${port[$m]}"
		i=$((i + 1))
	done
}

run_vm() { # GUEST_SCRIPT OUT
	local st=0
	HABLOCK_VM_OUT=$2 "$vm" "$1" "$vm_timeout" || st=$?
	case $st in
	0) ;;
	77) exit 77 ;;
	124) fail "the VM timed out after ${vm_timeout}s" ;;
	*) fail "the guest script failed with status $st" ;;
	esac
}

check_sums_lines() { # FILE: every mode reported its files
	local m
	for m in "${modes[@]}"; do
		[ "$(grep -c "^$m [0-9a-f]\{64\}  \./" "$1")" -eq "$nfiles" ] ||
			{ cat "$1" >&2; fail "$1: expected $nfiles checksums for cache=$m"; }
	done
}

SECONDS=0
for m in "${modes[@]}"; do truncate -s "$disk_size" "$T/disk-$m"; done

# --- boot 1: mkfs, write, verify, re-attach, verify
start_servers
guest_phase1 >"$T/guest1.sh"
run_vm "$T/guest1.sh" "$T/sums1"
check_sums_lines "$T/sums1"
stop_servers
log "boot 1 passed (${SECONDS}s)"

# --- the backing files themselves hold a clean file system and the files
for m in "${modes[@]}"; do
	e2fsck -fn "$T/disk-$m" >"$T/fsck-$m.log" 2>&1 ||
		{ cat "$T/fsck-$m.log" >&2; fail "e2fsck -fn on the cache=$m backing file"; }
	while read -r tag sum path; do
		[ "$tag" = "$m" ] || continue
		got=$(debugfs -R "cat ${path#.}" "$T/disk-$m" 2>/dev/null | sha256sum | cut -d' ' -f1)
		[ "$got" = "$sum" ] ||
			fail "cache=$m backing file: ${path#.} has sha256 $got, the guest wrote $sum"
	done <"$T/sums1"
done
log "backing files checked on the host (${SECONDS}s)"

# --- boot 2: new servers on the same files; attach, fsck, verify
start_servers
guest_phase2 >"$T/guest2.sh"
run_vm "$T/guest2.sh" "$T/sums2"
check_sums_lines "$T/sums2"
cmp -s "$T/sums1" "$T/sums2" ||
	{ diff "$T/sums1" "$T/sums2" >&2 || true; fail "checksums differ between the boots"; }
stop_servers
log "PASS: kernel NBD client, cache=${modes[*]}, ${SECONDS}s"
