#!/bin/bash
# nbd-vm.sh - run a shell script as root inside a tiny Linux VM whose kernel has
# the nbd driver, so that the kernel's own NBD client can be tested on a host
# that has no nbd module.
#
#   nbd-vm.sh GUEST_SCRIPT [TIMEOUT_S]
#
# The VM boots the host's newest /boot/vmlinuz-* that has nbd.ko, under QEMU's
# software emulation (TCG; a KVM guest hangs at boot on these machines), with
# an initramfs holding busybox, nbd-client, mkfs.ext4, e2fsck and the modules
# nbd, virtio_net and ext4. The only network is QEMU user networking: inside the
# guest eth0 is 10.0.2.15 and 10.0.2.2 is the host's loopback, so a server on
# the host's 127.0.0.1:PORT is reached as 10.0.2.2:PORT.
#
# In the guest:
#   /guest.sh        GUEST_SCRIPT, run with `sh` from busybox, cwd /tmp
#   /dev/hostout     a serial port whose bytes land in $HABLOCK_VM_OUT (if set)
#                    on the host: a clean channel for results, apart from the
#                    console (which kernel messages share)
#   /dev/nbd0..15    the kernel NBD devices
#
# Prints the console; exits with the guest script's exit status, 124 when the
# guest did not finish within TIMEOUT_S (default 120), 77 (SKIP) when QEMU or a
# kernel with the nbd module is missing, 1 when the harness itself fails.
#
# Environment:
#   HABLOCK_VM_CACHE  directory where the initramfs is kept between runs, keyed
#                     by kernel version and a hash of this script, the guest
#                     tools, their libraries and the modules. Unset: rebuilt in
#                     a temporary directory for every boot.
#   HABLOCK_VM_OUT    host file receiving what the guest wrote to /dev/hostout.
#   HABLOCK_VM_MEM    guest memory in MiB (default 256).
set -euo pipefail

script=${1:?usage: nbd-vm.sh GUEST_SCRIPT [TIMEOUT_S]}
limit=${2:-120}
[ -r "$script" ] || { echo "nbd-vm.sh: cannot read $script" >&2; exit 1; }

skip() { echo "SKIP: $*"; exit 77; }
PATH=$PATH:/usr/sbin:/sbin

command -v qemu-system-x86_64 >/dev/null ||
	skip "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
command -v cpio >/dev/null || skip "cpio not found (apt-get install cpio)"

# The newest kernel that has both a readable image and the nbd module.
kver=
mapfile -t kvers < <(find /lib/modules -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -rV)
for v in "${kvers[@]}"; do
	[ -r "/boot/vmlinuz-$v" ] || continue
	ls "/lib/modules/$v/kernel/drivers/block/"nbd.ko* >/dev/null 2>&1 ||
		grep -qs '/nbd\.ko' "/lib/modules/$v/modules.builtin" || continue
	kver=$v
	break
done
[ -n "$kver" ] ||
	skip "no readable /boot/vmlinuz-* with an nbd module (apt-get install linux-image-amd64)"
kernel=/boot/vmlinuz-$kver

busybox=$(command -v busybox || true)
if [ -z "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
	skip "no static busybox (apt-get install busybox-static)"
fi
tools=("$busybox")
for t in nbd-client mkfs.ext4 e2fsck; do
	p=$(command -v $t || true)
	[ -n "$p" ] || skip "$t not found (apt-get install nbd-client e2fsprogs)"
	tools+=("$p") # by its own name: mke2fs reads the file system type from it
done

command -v modprobe >/dev/null || skip "modprobe not found (apt-get install kmod)"
# Modules in dependency order, as modprobe would load them; options from
# /etc/modprobe.d are left out so the guest sees the drivers' defaults.
mapfile -t modules < <(for m in nbd virtio_pci virtio_net ext4; do
	modprobe -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
[ "${#modules[@]}" -gt 0 ] || skip "modprobe cannot resolve the modules of $kver"

work=$(mktemp -d "${TMPDIR:-/tmp}/hablock-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT

libs_of() { ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true; }

# The key of the cached initramfs: everything that goes into it.
key=$({
	echo "$kver"
	echo "${tools[@]##*/}"
	sha256sum "$0" "$kernel" "${tools[@]}" "${modules[@]}" | cut -d' ' -f1
	for t in "${tools[@]}"; do libs_of "$t"; done | sort -u | xargs -r sha256sum
} | sha256sum | cut -c1-16)

build_base() { # $1: output file
	local ir=$work/base l i=0 m t
	mkdir -p "$ir"/{bin,sbin,dev,proc,sys,mnt,tmp,etc,mods}
	cp "$busybox" "$ir/bin/busybox"
	for t in "${tools[@]:1}"; do
		cp -L "$t" "$ir/bin/"
		for l in $(libs_of "$t"); do
			mkdir -p "$ir$(dirname "$l")"
			cp -L "$l" "$ir$l"
		done
	done
	[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$ir/etc/"
	ln -s /proc/mounts "$ir/etc/mtab"
	for m in "${modules[@]}"; do
		i=$((i + 1))
		t=$ir/mods/$(printf %02d $i)-$(basename "$m")
		case $m in
		*.ko) cp "$m" "$t" ;;
		*.ko.xz) xz -dc "$m" >"${t%.xz}" ;;
		*.ko.gz) gzip -dc "$m" >"${t%.gz}" ;;
		*.ko.zst) zstd -qdc "$m" >"${t%.zst}" ;;
		*) echo "nbd-vm.sh: unknown module format $m" >&2; return 1 ;;
		esac
	done
	cat >"$ir/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# crc32c-intel refuses a CPU without SSE4.2; crc32c_generic stands in.
for m in /mods/*.ko; do insmod "$m" 2>/dev/null || true; done
for p in /dev/ttyS1 /dev/ttyS2; do stty -F "$p" raw -echo; done
ln -s /dev/ttyS2 /dev/hostout
ip link set lo up
n=0
until [ -e /sys/class/net/eth0 ] || [ $n -ge 500 ]; do n=$((n + 1)); usleep 10000; done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
cd /tmp
sh /guest.sh </dev/null
rc=$?
echo "guest script exited with status $rc"
echo "$rc" >/dev/ttyS1 # the close waits until the UART has sent it
sync
poweroff -f
INIT
	chmod 755 "$ir/init"
	(cd "$ir" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 >"$1"
}

if [ -n "${HABLOCK_VM_CACHE:-}" ]; then
	mkdir -p "$HABLOCK_VM_CACHE"
	base=$HABLOCK_VM_CACHE/initramfs-$kver-$key.cpio.gz
	if [ ! -s "$base" ]; then
		build_base "$work/base.cpio.gz"
		mv -f "$work/base.cpio.gz" "$base" # atomic: a parallel boot sees all or nothing
		# Images of older harnesses or tools, idle for an hour, go.
		find "$HABLOCK_VM_CACHE" -maxdepth 1 -name 'initramfs-*.cpio.gz' \
			! -name "${base##*/}" -mmin +60 -delete
	fi
else
	base=$work/base.cpio.gz
	build_base "$base"
fi

# The guest script travels in a second archive appended to the first: the
# kernel unpacks concatenated archives in order. An uncompressed archive must
# start at a multiple of 4 bytes; zero bytes between archives are skipped.
mkdir -p "$work/per-boot"
cp "$script" "$work/per-boot/guest.sh"
chmod 755 "$work/per-boot/guest.sh"
(cd "$work/per-boot" && echo guest.sh | cpio --quiet -o -H newc -R 0:0) >"$work/guest.cpio"
pad=$(((4 - $(stat -c %s "$base") % 4) % 4))
{ cat "$base"; head -c "$pad" /dev/zero; cat "$work/guest.cpio"; } >"$work/initrd"

: >"$work/status"
: >"$work/out"
set +e
timeout --kill-after=5 "$limit" qemu-system-x86_64 \
	-accel tcg -machine pc -smp 1 -m "${HABLOCK_VM_MEM:-256}" \
	-nodefaults -no-user-config -display none -no-reboot \
	-kernel "$kernel" -initrd "$work/initrd" \
	-append "console=ttyS0 quiet panic=-1" \
	-serial stdio -serial "file:$work/status" -serial "file:$work/out" \
	-netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
	</dev/null 2>&1 | sed -u 's/\r//g; s/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g'
qrc=${PIPESTATUS[0]}
set -e

[ -n "${HABLOCK_VM_OUT:-}" ] && tr -d '\r' <"$work/out" >"$HABLOCK_VM_OUT"
rc=$(tr -dc '0-9' <"$work/status")
if [ -z "$rc" ]; then
	if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
		echo "nbd-vm.sh: the guest did not finish within ${limit}s" >&2
		exit 124
	fi
	echo "nbd-vm.sh: qemu exited with status $qrc before the guest script finished" >&2
	exit 1
fi
exit "$rc"
