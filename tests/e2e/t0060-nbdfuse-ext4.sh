#!/usr/bin/env bash
# A real filesystem on hablock, for cache=none and cache=writeback: the
# device as a file through nbdfuse, a loop device on it, ext4. Files written
# in one mount are read back intact after detaching and attaching again,
# and e2fsck finds the filesystem clean (through the device and in the
# backing file itself).
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdfuse fusermount3 losetup mkfs.ext4 e2fsck mount \
         umount sha256sum timeout truncate
skip_unless "needs root (mount, losetup)" test "$(id -u)" -eq 0
skip_unless "no /dev/fuse" test -c /dev/fuse
skip_unless "no free loop device" losetup --find

FUSE_PID='' LOOP=''
M=$T/mnt
mkdir "$M" "$T/fuse"

# Each step has an undo that is safe to run twice and at any exit: the
# variables say what is still set up, so a loop device that another test
# got after we detached ours is never touched.
fuse_start() {   # SOCKET
    rm -f "$T/nbdfuse.pid"
    nbdfuse -P "$T/nbdfuse.pid" "$T/fuse/nbd" --unix "$1" >>"$T/nbdfuse.log" 2>&1 &
    FUSE_PID=$!
    wait_for 30 "nbdfuse to serve $T/fuse/nbd" test -s "$T/nbdfuse.pid"
}
# (mountpoint(1) says no for a FUSE mount whose server died: ask the table.)
mounted() { grep -q " $1 " /proc/self/mounts; }
fuse_gone() { ! _alive "$FUSE_PID"; }
fuse_stop() {
    local rc=0
    [[ -n $FUSE_PID ]] || return 0
    if mounted "$T/fuse"; then
        fusermount3 -u "$T/fuse" || fusermount3 -uz "$T/fuse"
    fi
    if ! wait_for 20 "nbdfuse to exit" fuse_gone; then
        kill -KILL "$FUSE_PID"
    fi
    wait "$FUSE_PID" || rc=$?
    FUSE_PID=
    if mounted "$T/fuse"; then fusermount3 -uz "$T/fuse"; fi
    if [[ $rc -ne 0 ]]; then
        fail "nbdfuse exited with status $rc: $(tail -n 5 "$T/nbdfuse.log")"; return 1
    fi
}
loop_attach() {
    LOOP=$(losetup --find --show --direct-io=off "$T/fuse/nbd")
    log "attached $LOOP"
}
loop_detach() {
    [[ -n $LOOP ]] || return 0
    losetup -d "$LOOP"
    LOOP=
}
fs_mount() { timeout 60 mount -t ext4 "$LOOP" "$M"; }
fs_umount() { if mounted "$M"; then timeout 60 umount "$M"; fi; }
on_exit fuse_stop
on_exit loop_detach
on_exit fs_umount

ext4_round_trip() {   # CACHE
    local cache=$1 i
    rm -f "$T/disk.img"
    truncate -s 128M "$T/disk.img"
    start_hablock fs disk="$T/disk.img" cache="$cache"
    fuse_start "${HB_SOCK[fs]}"
    loop_attach
    mkfs.ext4 -q -F "$LOOP"
    fs_mount
    mkdir -p "$M/a/b"
    for i in $(seq 1 12); do
        head -c $(( (i * 769 + 1) * 1031 )) /dev/urandom >"$M/a/file$i"
    done
    head -c $((20 << 20)) /dev/urandom >"$M/a/b/big"
    (cd "$M" && find . -type f -print0 | sort -z | xargs -0 sha256sum) >"$T/sums"
    fs_umount
    loop_detach

    loop_attach
    fs_mount
    (cd "$M" && sha256sum --quiet -c "$T/sums") || fail "checksums after remount (cache=$cache)"
    assert_eq "$(find "$M" -type f | wc -l)" 13 "files after remount (cache=$cache)"
    fs_umount
    e2fsck -fn "$LOOP" >"$T/fsck.out" 2>&1 ||
        fail "e2fsck on $LOOP (cache=$cache): $(cat "$T/fsck.out")"
    loop_detach
    fuse_stop
    stop_hablock fs
    e2fsck -fn "$T/disk.img" >"$T/fsck.out" 2>&1 ||
        fail "e2fsck on the backing file (cache=$cache): $(cat "$T/fsck.out")"
}

ext4_round_trip none
ext4_round_trip writeback
