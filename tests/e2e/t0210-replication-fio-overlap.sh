#!/usr/bin/env bash
# Two replicated nodes under concurrent load; after each load, once idle,
# the two backing files must be byte-identical (invariant 2):
#  (a) fio's nbd engine on the Primary: random writes, 4k-64k, iodepth 16,
#      crc32c in every block, read back and verified;
#  (b) four connections at once writing OVERLAPPING ranges of the same 1 MiB
#      region with different data, many requests in flight on each (random
#      sizes and offsets, some not 512-aligned, a few zero requests), then a
#      flush: conflicting in-flight requests must be applied in the same
#      order on both nodes.
# Each pass runs on a new pair, with cache=none (the default), with
# cache=writeback, and with the Primary on writeback and the Secondary on
# none (one node's byte-granular writes meet the other's read-modify-write).
#
# Environment: HB_T0210_OPS (requests per overlap client, default 1500),
# HB_T0210_ROUNDS (overlap rounds per pass, default 3), HB_T0210_FIO_SIZE
# (bytes fio writes, default 64 MiB), HB_T0210_CACHES (default
# "none writeback writeback/none"; A/B means alpha on A, bravo on B), HB_T0210_IO (io= backend, default: the plugin's).
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo fio cmp openssl truncate /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"
skip_unless "fio has no nbd engine" sh -c 'fio --enghelp=nbd | grep -q uri'
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

size=$((64 << 20))
fio_size=${HB_T0210_FIO_SIZE:-$size}
ops=${HB_T0210_OPS:-1500}
rounds=${HB_T0210_ROUNDS:-3}
caches=${HB_T0210_CACHES:-none writeback writeback/none}
io_arg=()
[[ -z ${HB_T0210_IO:-} ]] || io_arg=(io="$HB_T0210_IO")

# One overlap client: connect, wait for the start signal (so that all the
# clients start together), then keep DEPTH requests in flight, each a write
# (or, one time in ten, a zero) of a random length at a random offset inside
# [BASE, BASE + REGION); then flush. Any failed request fails the client.
cat >"$T/overlap.py" <<'EOF'
import nbd, os, random, sys, time
uri, seed, nops, base, region, depth, gofile = sys.argv[1:8]
seed, nops, base, region, depth = int(seed), int(nops), int(base), int(region), int(depth)
rng = random.Random(seed)
h = nbd.NBD()
h.set_handle_name(f"overlap{seed}")
h.connect_uri(uri)
deadline = time.monotonic() + 30
while not os.path.exists(gofile):
    if time.monotonic() > deadline:
        sys.exit("no start signal within 30 s")
    time.sleep(0.005)

errors = []
def done(err):
    if err.value:
        errors.append(os.strerror(err.value))
    return 1   # retire the command

# Lengths: mostly small, some large, a third of them not 512-aligned.
def length():
    n = rng.choice((512, 1024, 4096, 4096, 8192, 16384, 65536, 131072))
    if rng.random() < 0.33:
        n = rng.randint(1, n)
    return n

pattern = os.urandom(256 << 10)  # this client's data; slices differ per request
issued = 0
while issued < nops or h.aio_in_flight() > 0:
    while issued < nops and h.aio_in_flight() < depth:
        n = min(length(), region)
        off = base + rng.randrange(0, region - n + 1)
        if rng.random() < 0.1:
            h.aio_zero(n, off, completion=done)
        else:
            s = rng.randrange(0, len(pattern) - n + 1)
            h.aio_pwrite(pattern[s:s + n], off, completion=done)
        issued += 1
    h.poll(-1)
    if errors:
        sys.exit(f"client {seed}: request failed: {errors[0]}")
h.flush()
h.shutdown()
print(f"client {seed}: {issued} requests", file=sys.stderr)
EOF

new_pair() {   # CACHE: MODE for both nodes, or ALPHA-MODE/BRAVO-MODE
    local ca=${1%/*} cb=${1#*/}
    rm -f "$T/alpha.img" "$T/bravo.img"
    make_pair "$size" cert
    start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha cache="$ca" "${io_arg[@]}"
    start_hablock --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo cache="$cb" "${io_arg[@]}"
    wait_for 30 "alpha and bravo to connect (cache=$1)" node_is alpha connection Connected
    hactl_on alpha promote --force
    wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate
    assert_eq "$(node_field alpha role)" Primary "alpha's role"
}

# Both backing files identical, nothing out of sync, still connected.
check_identical() {   # WHAT
    node_is alpha connection Connected || fail "$1: alpha is $(node_field alpha connection), not Connected"
    assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "$1: alpha out_of_sync_bytes"
    if ! cmp "$T/alpha.img" "$T/bravo.img" >"$T/cmp.out" 2>&1; then
        /usr/bin/python3 - "$T/alpha.img" "$T/bravo.img" <<'EOF' >&2 || true
import sys
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
diff = [i for i in range(0, len(a), 512) if a[i:i + 512] != b[i:i + 512]]
print(f"{len(diff)} differing 512-byte sectors; first at byte offsets "
      f"{', '.join(str(i) for i in diff[:8])}")
EOF
        fail "$1: the two backing files differ: $(cat "$T/cmp.out")"
    fi
    log "ok: $1: alpha.img and bravo.img are byte-identical"
}

fio_pass() {   # CACHE
    local t0=$SECONDS
    timeout -k 5 90 fio --name=repl --ioengine=nbd --uri="${HB_URI[alpha]}" \
        --rw=randwrite --iodepth=16 --bsrange=4k-64k --size="$fio_size" \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output-format=json --output="$T/fio.json" >"$T/fio.out" 2>&1 ||
        fail "fio (cache=$1) exited non-zero: $(tail -n 20 "$T/fio.out")"
    /usr/bin/python3 - "$T/fio.json" "$fio_size" <<'EOF' ||
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
size = int(sys.argv[2])
got = (job["error"], job["write"]["io_bytes"], job["read"]["io_bytes"])
if got != (0, size, size):
    sys.exit(f"error, written, verified: expected (0, {size}, {size}), got {got}")
EOF
        fail "fio (cache=$1): $(tail -n 20 "$T/fio.out")"
    log "fio (cache=$1): $((fio_size >> 20)) MiB written and verified in $((SECONDS - t0))s"
    check_identical "after fio (cache=$1)"
}

overlap_pass() {   # CACHE ROUND
    local cache=$1 round=$2 i rc base=$(((8 + 4 * $2) << 20)) t0=$SECONDS
    local -a pids=()
    rm -f "$T/go"
    for i in 1 2 3 4; do
        timeout -k 5 60 /usr/bin/python3 "$T/overlap.py" "${HB_URI[alpha]}" \
            "$((round * 10 + i))" "$ops" "$base" $((1 << 20)) 32 "$T/go" \
            2>"$T/overlap$i.err" &
        pids+=($!)
    done
    touch "$T/go"
    for i in 1 2 3 4; do
        rc=0; wait "${pids[i - 1]}" || rc=$?
        [[ $rc -eq 0 ]] || fail "overlap client $i (cache=$cache round $round) exited $rc: $(tail -n 5 "$T/overlap$i.err")"
    done
    # One more flush on a new connection, then the files must agree.
    /usr/bin/python3 -c 'import nbd, sys; h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.flush(); h.shutdown()' \
        "${HB_URI[alpha]}"
    log "overlap (cache=$cache round $round): 4 clients x $ops requests over 1 MiB at $((base >> 20)) MiB in $((SECONDS - t0))s"
    check_identical "after overlapping writes (cache=$cache round $round)"
}

for cache in $caches; do
    log "== cache=$cache"
    new_pair "$cache"
    fio_pass "$cache"
    for (( r = 1; r <= rounds; r++ )); do
        overlap_pass "$cache" "$r"
    done
    stop_hablock alpha
    stop_hablock bravo
done
