#!/usr/bin/env bash
# hablock two-node demo: a file system on a replicated device survives the
# death of its Primary.
#
#   sudo scripts/demo.sh
#
# On this one machine it runs the two nodes of a resource, alpha and bravo,
# each an nbdkit process with the hablock plugin over its own 256 MiB disk
# file, replicating over mutual TLS on 127.0.0.1 (certificates made here by
# tests/tls/mkcerts.sh). alpha is made Primary (--force: a new pair of
# zero-filled disks is declared identical); its device is attached as a
# block device (nbdfuse + a loop device), gets an ext4 file system, files and
# their checksums, and a `sync`. Then alpha is killed with SIGKILL while the
# file system is still mounted: the failure. bravo is promoted, its device is
# attached the same way, the file system is recovered from its journal, must
# pass `e2fsck -fn` without a single complaint, and every file must have its
# checksum. `hactl status` of both nodes is shown along the way. Everything it
# sets up is torn down on exit, whatever happens. Exit status 0 only if every
# file verified.
#
# When alpha dies, the nbdfuse of the time (libnbd 1.14) aborts on an
# assertion as soon as a request fails under it; the clean-up of that dead
# stack (umount, or umount -l if it hangs; losetup -d; fusermount3 -uz) says
# what happened and goes on.
#
# The plugin and hactl come from build/ (scripts/run-demo.sh builds them; or
# `meson setup build && ninja -C build`); $HABLOCK_PLUGIN and $HACTL override.
# Needs root, nbdkit, nbdinfo, nbdfuse, fusermount3, losetup, mkfs.ext4,
# e2fsck, openssl, ss.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLUGIN=${HABLOCK_PLUGIN:-$ROOT/build/nbdkit-plugin/nbdkit-hablock-plugin.so}
HACTL=${HACTL:-$ROOT/build/ctl/hactl}
PATH=/usr/bin:/usr/sbin:$PATH
SIZE=256M

step() { printf '\n==> %s\n' "$*"; }
say()  { printf '    %s\n' "$*"; }
die()  { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

# --- what we need ---------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it mounts a file system and uses loop devices)"
for c in nbdkit nbdinfo nbdfuse fusermount3 losetup mkfs.ext4 e2fsck mount umount \
         sha256sum openssl ss timeout; do
    command -v "$c" >/dev/null || die "'$c' is not installed (scripts/install-deps.sh installs it)"
done
[[ -f $PLUGIN ]] || die "no plugin at $PLUGIN (build it: cd $ROOT && meson setup build && ninja -C build)"
[[ -x $HACTL ]] || die "no hactl at $HACTL (build it: cd $ROOT && meson setup build && ninja -C build)"
[[ -c /dev/fuse ]] || die "no /dev/fuse: nbdfuse cannot run here"
losetup --find >/dev/null 2>&1 || die "no free loop device"

WORK='' MNT=''
declare -A PID=() SOCK=() CTL=()
FUSE_PID='' FUSE_DIR='' FUSE_LOG='' LOOP='' VERIFIED=''

# --- small tools ----------------------------------------------------------
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

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 40000))
        [[ -z $(ss -Hltn "sport = :$p") ]] && { echo "$p"; return; }
    done
    die "no free TCP port found"
}

hactl_on() { local n=$1; shift; timeout 30 "$HACTL" --socket "${CTL[$n]}" "$@"; }
# field NODE KEY: a top-level string or number of `hactl status --json`.
field() {
    hactl_on "$1" status --json 2>/dev/null |
        sed -n "s/.*\"$2\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"
}
is() { [[ $(field "$1" "$2") == "$3" ]]; }
show_status() {
    local n
    for n in "$@"; do
        printf '    --- hactl status on %s\n' "$n"
        hactl_on "$n" status 2>&1 | sed 's/^/        /' || true
    done
}

# --- the nodes ------------------------------------------------------------
node_answers() {
    alive "${PID[$1]}" || die "node $1 exited: $(tail -n 5 "$WORK/$1.log")"
    "$HACTL" --socket "${CTL[$1]}" status >/dev/null 2>&1
}
start_node() {   # NAME
    local n=$1
    rm -f "${SOCK[$n]}"
    nbdkit -U "${SOCK[$n]}" -f "$PLUGIN" config="$WORK/r0.conf" node="$n" \
        >>"$WORK/$n.log" 2>&1 </dev/null &
    PID[$n]=$!
    wait_until 30 "node $n to answer on its control socket" node_answers "$n"
    say "node $n: nbdkit pid ${PID[$n]}, NBD on ${SOCK[$n]}, log $WORK/$n.log"
}
stop_node() {   # NAME: TERM, then KILL after 20 s
    local n=$1 pid=${PID[$1]:-} deadline
    [[ -n $pid ]] || return 0
    PID[$n]=''
    if alive "$pid"; then
        kill -TERM "$pid"
        deadline=$((SECONDS + 20))
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if alive "$pid"; then kill -KILL "$pid"; say "node $n ignored SIGTERM: killed"; fi
    fi
    wait "$pid" 2>/dev/null || true
    say "stopped node $n (pid $pid)"
}

# --- the client side: nbdfuse shows the device as a file, a loop device
# --- makes it a block device -------------------------------------------------
attach() {   # NODE
    local n=$1
    FUSE_DIR=$WORK/fuse-$n
    mkdir -p "$FUSE_DIR"
    rm -f "$WORK/nbdfuse-$n.pid"
    nbdfuse -P "$WORK/nbdfuse-$n.pid" "$FUSE_DIR/nbd" --unix "${SOCK[$n]}" \
        >>"$WORK/nbdfuse-$n.log" 2>&1 </dev/null &
    FUSE_PID=$!
    FUSE_LOG=$WORK/nbdfuse-$n.log
    disown "$FUSE_PID"   # its end is reported below, not by bash
    wait_until 30 "nbdfuse to serve $FUSE_DIR/nbd" test -s "$WORK/nbdfuse-$n.pid"
    say "nbdfuse (pid $FUSE_PID) shows $n's device as the file $FUSE_DIR/nbd"
    LOOP=$(losetup --find --show --direct-io=off "$FUSE_DIR/nbd")
    say "loop device $LOOP on it"
}

# Disowned (so that bash does not report its death by a signal), nbdfuse is
# reaped by bash at once: check that the PID is still an nbdfuse.
fuse_alive() { alive "$FUSE_PID" && [[ $(ps -o comm= -p "$FUSE_PID") == nbdfuse ]]; }

# Undo attach. Robust when the server behind it is dead: the file system is
# unmounted lazily (its last writes fail: the server is gone), the loop
# device is detached (at once, or by autoclear when its last user lets go),
# nbdfuse is stopped, and its FUSE mount is removed lazily.
detach() {
    local deadline
    if [[ -n $MNT ]] && mounted "$MNT"; then
        if timeout 20 umount "$MNT" 2>/dev/null; then
            say "unmounted $MNT"
        elif timeout 20 umount -l "$MNT"; then
            say "unmounted $MNT lazily (umount -l)"
        else
            say "warning: could not unmount $MNT"
        fi
    fi
    if [[ -n $LOOP ]]; then
        if timeout 20 losetup -d "$LOOP"; then
            say "detached $LOOP"
        else
            say "warning: losetup -d $LOOP failed"
        fi
        LOOP=''
    fi
    if [[ -n $FUSE_PID ]]; then
        fuse_alive ||
            say "nbdfuse has exited (its server is gone): $(tail -n 1 "$FUSE_LOG")"
        if mounted "$FUSE_DIR"; then
            timeout 20 fusermount3 -u "$FUSE_DIR" 2>/dev/null || timeout 20 fusermount3 -uz "$FUSE_DIR" || true
        fi
        deadline=$((SECONDS + 10))
        while fuse_alive && ((SECONDS < deadline)); do sleep 0.1; done
        if fuse_alive; then kill -KILL "$FUSE_PID"; fi
        if mounted "$FUSE_DIR"; then timeout 20 fusermount3 -uz "$FUSE_DIR" || true; fi
        say "stopped nbdfuse (pid $FUSE_PID)"
        FUSE_PID=''
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM HUP   # a second signal must not cut the clean-up short
    set +e
    step "Cleaning up"
    detach
    stop_node alpha
    stop_node bravo
    if [[ -n $WORK ]]; then
        if grep -q " $WORK/" /proc/self/mounts; then
            say "warning: something is still mounted under $WORK: left in place"
        else
            rm -rf "$WORK"
            say "removed $WORK"
        fi
    fi
    if [[ $rc -eq 0 && $VERIFIED == yes ]]; then
        printf '\ndemo: OK: alpha died with the file system mounted; on bravo every file read back intact\n'
    else
        [[ $rc -ne 0 ]] || rc=1
        printf '\ndemo: FAILED (exit status %s)\n' "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
WORK=$(mktemp -d /var/tmp/hablock-demo.XXXXXX)
MNT=$WORK/mnt
mkdir "$MNT"
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- the demo -------------------------------------------------------------
step "Making TLS certificates: a CA, and one certificate per node naming it"
sh "$ROOT/tests/tls/mkcerts.sh" "$WORK/tls" >/dev/null 2>&1 || die "tests/tls/mkcerts.sh failed"
for n in alpha bravo; do
    san=$(openssl x509 -in "$WORK/tls/$n.crt" -noout -ext subjectAltName | grep -o 'DNS:[^ ,]*')
    say "$WORK/tls/$n.crt: $(openssl x509 -in "$WORK/tls/$n.crt" -noout -subject), $san, $(openssl x509 -in "$WORK/tls/$n.crt" -noout -issuer)"
done
say "(mkcerts.sh also makes the bad certificates the tests use; the demo uses ca.crt and these two)"

step "Writing the resource file, the same for both nodes"
truncate -s "$SIZE" "$WORK/alpha.img" "$WORK/bravo.img"
port_a=$(free_port) port_b=$(free_port)
while [[ $port_b == "$port_a" ]]; do port_b=$(free_port); done
cat >"$WORK/r0.conf" <<EOF
[resource]
name = r0
protocol = C
control = $WORK/%n.ctl
ping-interval = 500ms
ping-timeout = 2s
connect-timeout = 5s

[tls]
ca = $WORK/tls/ca.crt
cert = $WORK/tls/%n.crt
key = $WORK/tls/%n.key

[node alpha]
disk = $WORK/alpha.img
address = 127.0.0.1:$port_a

[node bravo]
disk = $WORK/bravo.img
address = 127.0.0.1:$port_b
EOF
sed 's/^/        /' "$WORK/r0.conf"
for n in alpha bravo; do SOCK[$n]=$WORK/$n.sock CTL[$n]=$WORK/$n.ctl; done

step "Starting both nodes (alpha listens on 127.0.0.1:$port_a, bravo connects to it)"
start_node alpha
start_node bravo
wait_until 30 "alpha and bravo to connect" is alpha connection Connected
say "connected over $(field alpha version), $(field alpha cipher); each checked the other's certificate"
show_status alpha bravo

step "Promoting alpha (--force: the new, zero-filled disks are declared identical)"
hactl_on alpha promote --force
wait_until 10 "bravo to be UpToDate" is bravo disk UpToDate
say "alpha is $(field alpha role), bravo is $(field bravo role) and $(field bravo disk)"
if nbdinfo --size "nbd+unix:///?socket=${SOCK[bravo]}" >/dev/null 2>&1; then
    die "the Secondary bravo served an NBD client"
fi
why=$(grep -m1 -o 'this node is Secondary[^"]*' "$WORK/bravo.log") ||
    die "bravo refused the NBD client without saying why in its log"
say "bravo refuses NBD clients: $why"

step "Attaching alpha's device and making an ext4 file system on it"
attach alpha
mkfs.ext4 -q -L hablock-demo "$LOOP"
say "mkfs.ext4 $LOOP"
mount -t ext4 "$LOOP" "$MNT"
say "mounted $LOOP on $MNT"

step "Writing files through alpha (every write goes to both disks before it is acknowledged)"
mkdir -p "$MNT/docs" "$MNT/data"
printf 'Written through hablock on %s.\n' "$(date)" >"$MNT/docs/hello.txt"
for i in 1 2 3 4 5; do
    head -c $((i * 3 << 20)) /dev/urandom >"$MNT/data/random-$i.bin"
done
cp -r /usr/share/doc/nbdkit "$MNT/docs/" 2>/dev/null || true
(cd "$MNT" && find . -type f ! -path './lost+found/*' -print0 | sort -z | xargs -0 sha256sum) >"$WORK/SHA256SUMS"
NFILES=$(wc -l <"$WORK/SHA256SUMS")
say "$NFILES files, $(du -sh "$MNT" | cut -f1) in all; checksums in $WORK/SHA256SUMS:"
head -n 3 "$WORK/SHA256SUMS" | sed 's/^/        /'
sync
say "sync: everything above is flushed, so durable on alpha and on bravo"
show_status alpha bravo

step "The failure: kill -9 alpha while its file system is mounted"
kill -KILL "${PID[alpha]}"
wait "${PID[alpha]}" 2>/dev/null || true
say "killed nbdkit on alpha (pid ${PID[alpha]})"
PID[alpha]=''
wait_until 15 "bravo to notice that alpha is gone" is bravo connection Connecting
say "bravo noticed: connection $(field bravo connection), role $(field bravo role), disk $(field bravo disk)"

step "Detaching the dead device (its server is gone: umount, or umount -l if it hangs; losetup -d; fusermount3 -uz)"
detach

step "Promoting bravo (no --force needed: its data is UpToDate)"
hactl_on bravo promote
say "bravo is $(field bravo role)"
show_status bravo

step "Attaching bravo's device"
attach bravo

step "Recovering the file system from its journal"
say "alpha died with the file system mounted, so it was never cleanly unmounted:"
say "mounting it once lets the kernel replay its journal, as after any crash;"
say "after a clean unmount e2fsck -fn must then find nothing at all."
mount -t ext4 "$LOOP" "$MNT"
dmesg 2>/dev/null | grep "$(basename "$LOOP")" | grep -i 'recovery complete' | tail -n 1 | sed 's/^/    kernel: /' || true
umount "$MNT"
e2fsck -fn "$LOOP" >"$WORK/fsck.log" 2>&1 || die "e2fsck -fn found problems: $(cat "$WORK/fsck.log")"
say "e2fsck -fn: clean ($(tail -n 1 "$WORK/fsck.log"))"

step "Verifying the checksums of all $NFILES files on bravo"
mount -t ext4 "$LOOP" "$MNT"
say "mounted $LOOP on $MNT"
(cd "$MNT" && sha256sum --quiet -c "$WORK/SHA256SUMS") || die "checksums differ on bravo"
VERIFIED=yes
say "all $NFILES files match"
show_status bravo
