#!/usr/bin/env bash
# Losing the peer under load. A writer on the Primary keeps 4 KiB writes in
# flight (each block: generation, offset, checksum) and, at the end, reads
# every block it wrote back from the Primary. Two cases:
#  1. loopback: kill -9 the Secondary under load. The Primary carries on
#     without a client error, says Connecting and counts out-of-sync bytes.
#  2. two network namespaces made by this test, joined by a veth pair with
#     addresses from 192.0.2.0/24 (TEST-NET-1, only between those two
#     namespaces); each node runs in its own namespace, its NBD and control
#     sockets are Unix sockets in $T. Under load, nftables in the Primary's
#     namespace drops everything on the veth: the load carries on without a
#     client error, the Primary leaves Connected within the ping timeout and
#     counts out-of-sync bytes; the Secondary says Connecting and stays
#     Secondary. With the link back, the reconnection is REFUSED (out of
#     sync, and a log says so) and the Primary goes on serving.
#  3. loopback: the Secondary hangs (SIGSTOP) under load: its socket stays
#     open and nothing comes back. The Primary leaves Connected within the
#     ping timeout, the writes that were waiting for the hung peer complete
#     locally within that bound, the load carries on; once resumed
#     (SIGCONT), the Secondary finds its link gone, stays Secondary, and its
#     reconnection is refused (out of sync).
#  4. loopback: the Primary hangs (SIGSTOP) while idle. The Secondary
#     leaves Connected within the ping timeout and stays Secondary; once
#     the Primary resumes, nothing is out of sync, so the pair connects
#     again and a new write reaches both disks.
# Every namespace, veth and nftables table is removed on every exit path.
# Case 2 skips (77) when network namespaces or nftables are unavailable
# (after case 1 has passed).
#
# Environment: HB_T0230_LOAD (acknowledged writes that must go through in
# each phase of the load, default 1000), HB_T0230_CASES (default
# "loopback netns hung_secondary hung_primary").
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo openssl truncate /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

size=$((32 << 20))
phase=${HB_T0230_LOAD:-1000}
cases=${HB_T0230_CASES:-loopback netns hung_secondary hung_primary}
ping_timeout_ms=2000 ping_interval_ms=500   # set in r0.conf by case 2

# The load: DEPTH writes in flight at random 4 KiB blocks, never two at
# the same block. Every 0.1 s it writes "ACKED MAX-LATENCY-MS" to PROGRESS.
# When STOP exists it drains, flushes, reads back every block it wrote and
# checks it holds the last write (with its checksum). Any failed request
# ends it with status 1 at once; 120 s without STOP, status 2.
cat >"$T/load.py" <<'EOF'
import hashlib, nbd, os, random, struct, sys, time
uri, size, depth, progress, stop = sys.argv[1:6]
size, depth = int(size), int(depth)
BS, HDR, SUM = 4096, struct.Struct("<8sQQ"), 16
nblocks = size // BS
rng = random.Random()
fills = [os.urandom(BS) for _ in range(64)]

def make(gen, off):
    body = HDR.pack(b"HBLOAD01", gen, off) + rng.choice(fills)[:BS - HDR.size - SUM]
    return body + hashlib.blake2b(body, digest_size=SUM).digest()

h = nbd.NBD()
h.connect_uri(uri)
busy, last = set(), {}
acked, gen, maxlat = 0, 0, 0.0
error = None
t0 = last_report = time.monotonic()

def report():
    tmp = progress + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{acked} {int(maxlat * 1000)}\n")
    os.rename(tmp, progress)

def completion(off, g, sent):
    def cb(err):
        global acked, maxlat, error
        busy.discard(off)
        if err.value:
            error = error or f"write of generation {g} at {off} failed: {os.strerror(err.value)}"
        else:
            acked += 1
            last[off] = g
            maxlat = max(maxlat, time.monotonic() - sent)
        return 1
    return cb

try:
    while not os.path.exists(stop):
        if time.monotonic() - t0 > 120:
            print("load: no stop signal within 120 s", file=sys.stderr)
            sys.exit(2)
        while h.aio_in_flight() < depth:
            off = rng.randrange(nblocks) * BS
            if off in busy:
                continue
            gen += 1
            busy.add(off)
            h.aio_pwrite(make(gen, off), off, completion=completion(off, gen, time.monotonic()))
        h.poll(100)
        if error:
            break
        if time.monotonic() - last_report >= 0.1:
            report()
            last_report = time.monotonic()
    while error is None and h.aio_in_flight() > 0:
        h.poll(-1)
    report()
    if error is None:
        h.flush()
except nbd.Error as e:
    error = error or f"libnbd: {e}"
if error:
    print(f"load: CLIENT ERROR after {acked} acknowledged writes: {error}", file=sys.stderr)
    sys.exit(1)

wrong = []
for off, g in last.items():
    b = h.pread(BS, off)
    magic, got, at = HDR.unpack_from(b)
    ok = hashlib.blake2b(b[:BS - SUM], digest_size=SUM).digest() == b[BS - SUM:]
    if (magic, got, at, ok) != (b"HBLOAD01", g, off, True):
        wrong.append(f"offset {off}: expected generation {g}, read magic {magic!r} "
                     f"generation {got} offset {at} checksum {'ok' if ok else 'BAD'}")
h.shutdown()
print(f"load: {acked} acknowledged writes, {len(last)} blocks read back, "
      f"{len(wrong)} wrong; slowest acknowledgement {maxlat * 1000:.0f} ms", file=sys.stderr)
for w in wrong[:20]:
    print("  " + w, file=sys.stderr)
sys.exit(1 if wrong else 0)
EOF

load_pid=
on_exit '[[ -z $load_pid ]] || kill "$load_pid" 2>/dev/null || true'

start_load() {   # NODE
    rm -f "$T/progress" "$T/stop"
    timeout -k 5 150 /usr/bin/python3 "$T/load.py" "${HB_URI[$1]}" "$size" 16 \
        "$T/progress" "$T/stop" 2>"$T/load.err" &
    load_pid=$!
}

acked() { local a _; read -r a _ 2>/dev/null <"$T/progress" || a=0; echo "${a:-0}"; }

_load_past() {   # COUNT: the load has that many acks, or has stopped
    kill -0 "$load_pid" 2>/dev/null || return 0
    (( $(acked) >= $1 ))
}

# load_goes_on WHAT: PHASE more writes are acknowledged, without a client error.
load_goes_on() {
    local target=$(( $(acked) + phase ))
    wait_for 30 "$phase more acknowledged writes ($1)" _load_past "$target"
    kill -0 "$load_pid" 2>/dev/null ||
        fail "the load stopped ($1): $(tail -n 5 "$T/load.err")"
    log "ok: load goes on ($1): $(acked) writes acknowledged"
}

stop_load() {
    local rc=0
    touch "$T/stop"
    wait "$load_pid" || rc=$?
    load_pid=
    [[ $rc -eq 0 ]] || fail "the load failed (status $rc): $(cat "$T/load.err")"
    log "$(head -n 1 "$T/load.err")"
}

promote_pair() {
    wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
    hactl_on alpha promote --force
    wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate
}

oos_positive() { (( $(node_field alpha out_of_sync_bytes) > 0 )); }
not_connected() { ! node_is "$1" connection Connected; }
now_ms() { date +%s%3N; }

# The ping timeout, plus one ping interval, plus a polling margin.
detect_bound=$(( ping_timeout_ms + ping_interval_ms + 1000 ))

# leaves_connected_in_time NODE START-MS WHAT: NODE leaves Connected within
# detect_bound ms of START-MS, when WHAT happened.
leaves_connected_in_time() {
    local node=$1 start=$2 what=$3 tdet
    wait_for 15 "$node to leave Connected after $what" not_connected "$node"
    tdet=$(( $(now_ms) - start ))
    log "$node left Connected $tdet ms after $what (now $(node_field "$node" connection); bound $detect_bound ms)"
    (( tdet <= detect_bound )) ||
        fail "$node took $tdet ms to notice $what (ping-timeout 2s; bound $detect_bound ms)"
}

# ---- case 1: loopback, kill -9 the Secondary under load ---------------------

case_loopback() {
    local t0=$SECONDS
    log "== case 1: loopback, kill -9 the Secondary under load"
    rm -f "$T/alpha.img" "$T/bravo.img"
    make_pair "$size" cert
    start_pair
    promote_pair
    start_load alpha
    load_goes_on "connected"

    kill -9 "${HB_PID[bravo]}"
    wait "${HB_PID[bravo]}" 2>/dev/null || true
    unset "HB_PID[bravo]"
    wait_for 10 "alpha to say Connecting after losing bravo" node_is alpha connection Connecting
    assert_eq "$(node_field alpha role)" Primary "alpha's role without its peer"
    wait_for 10 "alpha to count out-of-sync bytes" oos_positive
    load_goes_on "bravo killed"
    log "alpha: connection $(node_field alpha connection), out_of_sync_bytes $(node_field alpha out_of_sync_bytes)"
    stop_load
    (( $(node_field alpha out_of_sync_bytes) > 0 )) || fail "alpha's out_of_sync_bytes went back to 0"
    stop_hablock alpha
    log "case 1 passed in $((SECONDS - t0))s"
    passed_note=" (case 1 passed)"
}

# ---- case 2: two network namespaces, cut the link with nftables -------------

NA=hb-a-$$ NB=hb-b-$$ VA=hbva$$ VB=hbvb$$ NFT_TABLE=hb_cut_$$
ADDR_A=192.0.2.1 ADDR_B=192.0.2.2 PORT=7789
netns_made=
passed_note=   # said when case 2 skips after case 1 passed

_ns_exists() { ip netns list 2>/dev/null | grep -w -- "$1" >/dev/null; }

# Remove the nftables table, the veth pair and both namespaces, then check
# that none is left. Runs after both servers are stopped (on_exit order).
netns_cleanup() {
    local ns
    [[ -n $netns_made ]] || return 0
    for ns in "$NA" "$NB"; do
        _ns_exists "$ns" || continue
        ip netns exec "$ns" nft delete table inet "$NFT_TABLE" 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
    done
    ip link del "$VA" 2>/dev/null || true   # only if it never left the host
    for ns in "$NA" "$NB"; do
        if _ns_exists "$ns"; then fail "network namespace $ns is left"; return 1; fi
    done
    if ip link show "$VA" >/dev/null 2>&1 || ip link show "$VB" >/dev/null 2>&1; then
        fail "veth $VA/$VB is left in the host namespace"; return 1
    fi
    if [[ -n $(nft list tables 2>/dev/null | grep -w -- "$NFT_TABLE") ]]; then
        fail "nftables table $NFT_TABLE is left in the host namespace"; return 1
    fi
}

netns_setup() {
    [[ $(id -u) -eq 0 ]] || skip "case 2 needs root for ip netns and nft$passed_note"
    command -v ip >/dev/null || skip "ip (iproute2) not found$passed_note"
    command -v nft >/dev/null || skip "nft not found$passed_note"
    on_exit netns_cleanup
    netns_made=1
    ip netns add "$NA" 2>"$T/netns.err" ||
        skip "cannot create a network namespace: $(head -n 1 "$T/netns.err")$passed_note"
    ip netns add "$NB"
    ip netns exec "$NA" nft list tables >/dev/null 2>"$T/netns.err" ||
        skip "nft does not work in a network namespace: $(head -n 1 "$T/netns.err")$passed_note"
    # The veth is made inside NA with its peer in NB: it never is in the host.
    ip -n "$NA" link add "$VA" type veth peer name "$VB" netns "$NB" 2>"$T/netns.err" ||
        skip "cannot create a veth pair: $(head -n 1 "$T/netns.err")$passed_note"
    ip -n "$NA" addr add "$ADDR_A/24" dev "$VA"
    ip -n "$NB" addr add "$ADDR_B/24" dev "$VB"
    ip -n "$NA" link set lo up
    ip -n "$NB" link set lo up
    ip -n "$NA" link set "$VA" up
    ip -n "$NB" link set "$VB" up
}

cut_link() {   # in NA: drop everything in and out of the veth
    ip netns exec "$NA" nft -f - <<EOF
table inet $NFT_TABLE {
    chain input  { type filter hook input  priority -100; policy accept; iifname "$VA" drop; }
    chain output { type filter hook output priority -100; policy accept; oifname "$VA" drop; }
}
EOF
}

restore_link() { ip netns exec "$NA" nft delete table inet "$NFT_TABLE"; }

# mark_logs: remember how long both logs are; _refusal_logged: since then a
# node logged that it refused the peer because of out-of-sync blocks.
declare -A log_lines=()
mark_logs() { local n; for n in alpha bravo; do log_lines[$n]=$(wc -l <"${HB_LOG[$n]}"); done; }
refusals_since_mark() {
    local n c total=0
    for n in alpha bravo; do
        c=$(tail -n "+$(( log_lines[$n] + 1 ))" "${HB_LOG[$n]}" | grep -Eic 'refus.*out of sync' || true)
        total=$(( total + c ))
    done
    echo "$total"
}
_ms_since() { (( $(now_ms) - $1 >= $2 )); }   # START-MS MS
_refusal_logged() {
    local n
    for n in alpha bravo; do
        tail -n "+$(( log_lines[$n] + 1 ))" "${HB_LOG[$n]}" |
            grep -Ei 'refus.*out of sync' | sed "s/^/$n: /" >"$T/refusal.txt" && return 0
    done
    return 1
}

case_netns() {
    local t0=$SECONDS tcut tref refusals
    log "== case 2: network namespaces $NA and $NB, cut the link with nftables"
    netns_setup
    rm -f "$T/alpha.img" "$T/bravo.img"
    make_pair "$size" cert
    # The same file, with the veth addresses.
    sed -i -e "/^\[node alpha\]/,/^\[/s/^address = .*/address = $ADDR_A:$PORT/" \
           -e "/^\[node bravo\]/,/^\[/s/^address = .*/address = $ADDR_B:$PORT/" "$T/r0.conf"
    sed -i -e "s/^ping-timeout = .*/ping-timeout = $((ping_timeout_ms))ms/" \
           -e "s/^ping-interval = .*/ping-interval = $((ping_interval_ms))ms/" "$T/r0.conf"
    grep -q "^address = $ADDR_A:$PORT\$" "$T/r0.conf" && grep -q "^address = $ADDR_B:$PORT\$" "$T/r0.conf" &&
        grep -q "^ping-timeout = ${ping_timeout_ms}ms\$" "$T/r0.conf" ||
        fail "could not set the veth addresses and ping timeout in $T/r0.conf: $(cat "$T/r0.conf")"
    start_hablock_under ip netns exec "$NA" -- --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha
    start_hablock_under ip netns exec "$NB" -- --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo
    promote_pair
    start_load alpha
    load_goes_on "connected over the veth"
    assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes before the cut"

    tcut=$(now_ms)
    cut_link
    log "link cut (nft table inet $NFT_TABLE in $NA drops everything on $VA)"
    leaves_connected_in_time alpha "$tcut" "the link was cut"
    wait_for 5 "alpha to count out-of-sync bytes" oos_positive
    assert_eq "$(node_field alpha role)" Primary "alpha's role after the cut"
    wait_for 10 "alpha to say Connecting after the cut" node_is alpha connection Connecting
    wait_for 10 "bravo to say Connecting after the cut" node_is bravo connection Connecting
    assert_eq "$(node_field bravo role)" Secondary "bravo's role after the cut"
    load_goes_on "link cut"
    log "alpha: out_of_sync_bytes $(node_field alpha out_of_sync_bytes); slowest acknowledgement so far $(cut -d' ' -f2 "$T/progress") ms"

    mark_logs
    restore_link
    log "link restored"
    wait_for 30 "a node to log that it refuses to reconnect with out-of-sync blocks" _refusal_logged
    log "refusal: $(head -n 1 "$T/refusal.txt")"
    not_connected alpha || fail "alpha says Connected after the refusal"
    not_connected bravo || fail "bravo says Connected after the refusal"
    assert_eq "$(node_field alpha role)" Primary "alpha's role after the refused reconnection"
    assert_eq "$(node_field bravo role)" Secondary "bravo's role after the refused reconnection"
    log "alpha last_error: $(node_field alpha last_error)"
    log "bravo last_error: $(node_field bravo last_error)"
    # The refusal lasts (nothing resyncs): the nodes must not retry in a
    # tight loop, a TLS handshake and two error lines each time. Count the
    # refusals over at least 2 s of load; allow 10 a second (a 100 ms
    # retry, the connector's own first backoff after a failed connect).
    mark_logs
    tref=$(now_ms)
    load_goes_on "after the refused reconnection"
    wait_for 10 "2 s of refused reconnections" _ms_since "$tref" 2000
    refusals=$(refusals_since_mark) tref=$(( $(now_ms) - tref ))
    log "$refusals refused reconnections in $tref ms"
    (( refusals * 1000 <= 10 * tref )) ||
        fail "the refused reconnection is retried without backing off: $refusals refused handshakes (each logged as an error) in $tref ms"
    not_connected alpha || fail "alpha says Connected while out of sync"
    stop_load
    (( $(node_field alpha out_of_sync_bytes) > 0 )) || fail "alpha's out_of_sync_bytes went back to 0"
    stop_hablock bravo
    stop_hablock alpha
    log "case 2 passed in $((SECONDS - t0))s"
}

# ---- case 3: loopback, the Secondary hangs under load ------------------------

# SIGSTOP NODE, and SIGCONT it on every exit path (a stopped nbdkit would
# ignore the cleanup's SIGTERM until the 20 s deadline).
hang() {
    local pid=${HB_PID[$1]}
    on_exit "kill -CONT $pid 2>/dev/null || true"
    kill -STOP "$pid"
}
resume() { kill -CONT "${HB_PID[$1]}"; }

case_hung_secondary() {
    local t0=$SECONDS tstop slowest
    log "== case 3: loopback, SIGSTOP the Secondary under load (a hung peer)"
    rm -f "$T/alpha.img" "$T/bravo.img"
    make_pair "$size" cert
    start_pair
    promote_pair
    start_load alpha
    load_goes_on "connected"
    assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes before the hang"

    tstop=$(now_ms)
    hang bravo
    log "bravo stopped (SIGSTOP) with writes in flight"
    # Only alpha is asked from here on: bravo's control socket does not answer.
    leaves_connected_in_time alpha "$tstop" "bravo hung"
    assert_eq "$(node_field alpha role)" Primary "alpha's role while bravo hangs"
    wait_for 5 "alpha to count out-of-sync bytes" oos_positive
    load_goes_on "bravo hung"
    # The writes that waited for bravo's ACK were answered once the link
    # was dropped: no acknowledgement took much longer than the detection.
    slowest=$(cut -d' ' -f2 "$T/progress")
    log "slowest acknowledgement so far: $slowest ms"
    (( slowest <= detect_bound + 1000 )) ||
        fail "a write waited $slowest ms for the hung peer (ping timeout 2s; bound $(( detect_bound + 1000 )) ms)"

    mark_logs
    resume bravo
    log "bravo resumed (SIGCONT)"
    wait_for 30 "a node to log that it refuses to reconnect with out-of-sync blocks" _refusal_logged
    log "refusal: $(head -n 1 "$T/refusal.txt")"
    wait_for 10 "bravo to say it is not connected" not_connected bravo
    assert_eq "$(node_field bravo role)" Secondary "bravo's role after it resumed"
    not_connected alpha || fail "alpha says Connected after the refusal"
    assert_eq "$(node_field alpha role)" Primary "alpha's role after bravo resumed"
    load_goes_on "bravo resumed and refused"
    stop_load
    (( $(node_field alpha out_of_sync_bytes) > 0 )) || fail "alpha's out_of_sync_bytes went back to 0"
    stop_hablock bravo
    stop_hablock alpha
    log "case 3 passed in $((SECONDS - t0))s"
}

# ---- case 4: loopback, the Primary hangs while idle -------------------------

write_block() {   # NODE OFFSET FILE: write FILE's 4 KiB at OFFSET, then flush
    /usr/bin/python3 - "${HB_URI[$1]}" "$2" "$3" <<'PY'
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.pwrite(open(sys.argv[3], "rb").read(), int(sys.argv[2]))
h.flush()
h.shutdown()
PY
}

case_hung_primary() {
    local t0=$SECONDS tstop off=$((5 << 20))
    log "== case 4: loopback, SIGSTOP the Primary while idle"
    rm -f "$T/alpha.img" "$T/bravo.img"
    make_pair "$size" cert
    start_pair
    promote_pair

    tstop=$(now_ms)
    hang alpha
    log "alpha stopped (SIGSTOP)"
    leaves_connected_in_time bravo "$tstop" "alpha hung"
    assert_eq "$(node_field bravo role)" Secondary "bravo's role while alpha hangs"
    assert_eq "$(node_field bravo disk)" UpToDate "bravo's disk while alpha hangs"

    resume alpha
    log "alpha resumed (SIGCONT)"
    # Nothing was written while apart: nothing is out of sync, so the
    # pair may and must connect again.
    wait_for 30 "alpha and bravo to connect again" node_is alpha connection Connected
    wait_for 10 "bravo to say Connected again" node_is bravo connection Connected
    assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes after the pause"
    assert_eq "$(node_field alpha role)" Primary "alpha's role after it resumed"
    head -c 4096 /dev/urandom >"$T/block"
    write_block alpha "$off" "$T/block"
    for n in alpha bravo; do
        cmp -s -n 4096 -i "$off:0" "$T/$n.img" "$T/block" ||
            fail "$n's disk does not hold the block written after the reconnection"
    done
    assert_same_bytes "$T/alpha.img" "$T/bravo.img" "alpha's and bravo's disks after the reconnection"
    stop_hablock bravo
    stop_hablock alpha
    log "case 4 passed in $((SECONDS - t0))s"
}

for c in $cases; do
    "case_$c"
done
