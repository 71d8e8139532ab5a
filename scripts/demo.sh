#!/usr/bin/env bash
# hablock single-node demo: a filesystem on a disk served by hablock.
#
#   sudo scripts/demo.sh [PLUGIN-PARAMETER...]      e.g. io=uring cache=writeback
#
# Creates a temporary 256 MiB disk file, serves it with nbdkit and the
# hablock plugin, attaches it as a block device (nbdfuse + a loop device),
# makes an ext4 filesystem, writes files and their checksums, then unmounts,
# detaches and restarts the server, attaches and mounts again and verifies
# every checksum. Everything it sets up is torn down on exit, whatever
# happens. Exit status 0 only if every file verified.
#
# The plugin is $HABLOCK_PLUGIN, by default the one in build/ (build it with
# `meson setup build && ninja -C build`). Needs root, nbdkit, nbdinfo,
# nbdfuse, losetup, mkfs.ext4.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=${HABLOCK_PLUGIN:-$ROOT/build/nbdkit-plugin/nbdkit-hablock-plugin.so}
PATH=/usr/bin:/usr/sbin:$PATH

step() { printf '\n==> %s\n' "$*"; }
say()  { printf '    %s\n' "$*"; }
die()  { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# --- what we need ---------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it mounts a filesystem and uses a loop device)"
for c in nbdkit nbdinfo nbdfuse fusermount3 losetup mkfs.ext4 e2fsck mount umount sha256sum; do
    command -v "$c" >/dev/null || die "'$c' is not installed"
done
[[ -f $PLUGIN ]] || die "no plugin at $PLUGIN (build it: cd $ROOT && meson setup build && ninja -C build)"

WORK=$(mktemp -d /var/tmp/hablock-demo.XXXXXX)
DISK=$WORK/disk.img SOCK=$WORK/hablock.sock MNT=$WORK/mnt FUSE=$WORK/fuse
mkdir "$MNT" "$FUSE"
SERVER_PID='' FUSE_PID='' LOOP=''

# --- setting up and tearing down, each undo safe to run at any time -------
alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1") != Z* ]]; }
mounted() { grep -q " $1 " /proc/self/mounts; }

# wait_until SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_until() {
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@"; do
        ((SECONDS < deadline)) || die "gave up after $1 s waiting for $what"
        sleep 0.1
    done
}

server_answers() {
    alive "$SERVER_PID" || die "the server exited: $(tail -n 3 "$WORK/server.log")"
    nbdinfo --size "nbd+unix:///?socket=$SOCK" >/dev/null 2>&1
}
start_server() {
    rm -f "$SOCK"
    nbdkit -U "$SOCK" -f "$PLUGIN" disk="$DISK" "$@" >>"$WORK/server.log" 2>&1 </dev/null &
    SERVER_PID=$!
    wait_until 30 "the server to answer" server_answers
    say "nbdkit (pid $SERVER_PID) serves $DISK on $SOCK"
}
stop_server() {
    alive "$SERVER_PID" || { SERVER_PID=''; return 0; }
    kill -TERM "$SERVER_PID"
    local deadline=$((SECONDS + 20))
    while alive "$SERVER_PID" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$SERVER_PID"; then kill -KILL "$SERVER_PID"; fi
    wait "$SERVER_PID" 2>/dev/null || true
    say "stopped nbdkit (pid $SERVER_PID)"
    SERVER_PID=''
}

start_fuse() {
    rm -f "$WORK/nbdfuse.pid"
    nbdfuse -P "$WORK/nbdfuse.pid" "$FUSE/nbd" --unix "$SOCK" >>"$WORK/nbdfuse.log" 2>&1 &
    FUSE_PID=$!
    wait_until 30 "nbdfuse to start" test -s "$WORK/nbdfuse.pid"
    say "nbdfuse (pid $FUSE_PID) shows the device as the file $FUSE/nbd"
}
stop_fuse() {
    [[ -n $FUSE_PID ]] || return 0
    if mounted "$FUSE"; then fusermount3 -u "$FUSE" || fusermount3 -uz "$FUSE"; fi
    local deadline=$((SECONDS + 20))
    while alive "$FUSE_PID" && ((SECONDS < deadline)); do sleep 0.1; done
    if alive "$FUSE_PID"; then kill -KILL "$FUSE_PID"; fi
    wait "$FUSE_PID" 2>/dev/null || true
    if mounted "$FUSE"; then fusermount3 -uz "$FUSE"; fi
    say "unmounted nbdfuse"
    FUSE_PID=''
}

attach() {
    LOOP=$(losetup --find --show --direct-io=off "$FUSE/nbd")
    say "attached the loop device $LOOP"
}
detach() {
    [[ -n $LOOP ]] || return 0
    losetup -d "$LOOP" && say "detached $LOOP"
    LOOP=''
}

mount_fs() { mount -t ext4 "$LOOP" "$MNT"; say "mounted $LOOP on $MNT"; }
umount_fs() {
    mounted "$MNT" || return 0
    umount "$MNT" && say "unmounted $MNT"
}

cleanup() {
    local rc=$?
    trap - EXIT
    set +e
    step "Cleaning up"
    umount_fs
    detach
    stop_fuse
    stop_server
    rm -rf "$WORK"
    say "removed $WORK"
    if [[ $rc -eq 0 ]]; then
        printf '\ndemo: OK: every file read back intact after remount and server restart\n'
    else
        printf '\ndemo: FAILED (exit status %s)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the demo -------------------------------------------------------------
step "Creating a 256 MiB disk file"
truncate -s 256M "$DISK"
say "$DISK"

step "Serving it with hablock ${*:-(default parameters)}"
start_server "$@"
say "the client sees $(nbdinfo --size "nbd+unix:///?socket=$SOCK") bytes"

step "Attaching it as a block device"
start_fuse
attach

step "Making an ext4 filesystem and mounting it"
mkfs.ext4 -q -L hablock-demo "$LOOP"
say "mkfs.ext4 on $LOOP"
mount_fs

step "Writing files"
mkdir -p "$MNT/docs" "$MNT/data"
printf 'Written through hablock on %s.\n' "$(date)" >"$MNT/docs/hello.txt"
for i in 1 2 3 4 5; do
    head -c $((i * 3 << 20)) /dev/urandom >"$MNT/data/random-$i.bin"
done
cp -r /usr/share/doc/nbdkit "$MNT/docs/" 2>/dev/null || true
(cd "$MNT" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum) >"$WORK/SHA256SUMS"
NFILES=$(wc -l <"$WORK/SHA256SUMS")
say "$NFILES files, $(du -sh "$MNT" | cut -f1) in all; checksums in $WORK/SHA256SUMS"
head -n 3 "$WORK/SHA256SUMS" | sed 's/^/    /'

step "Unmounting, detaching and stopping the server"
umount_fs
detach
stop_fuse
stop_server

step "Starting the server again and attaching the same disk"
start_server "$@"
start_fuse
attach
mount_fs

step "Verifying the checksums of all $NFILES files"
(cd "$MNT" && sha256sum --quiet -c "$WORK/SHA256SUMS") || die "checksums differ after remount"
say "all $NFILES files match"

step "Checking the filesystem"
umount_fs
e2fsck -fn "$LOOP" >"$WORK/fsck.log" 2>&1 || die "e2fsck found problems: $(cat "$WORK/fsck.log")"
say "e2fsck: clean"
