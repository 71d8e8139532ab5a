#!/usr/bin/env bash
# Invariant 1, no acknowledged write is lost: a writer on the Primary keeps
# several 4 KiB writes in flight at random block offsets, each block carrying
# a header (magic, generation, offset) and a checksum of the rest, and appends
# every ACKNOWLEDGED write (offset, generation, checksum) to a ledger. After N
# acknowledged writes, while it is still writing, the Primary is killed with
# SIGKILL. The writer sees its requests fail, stops cleanly and keeps its
# ledger. The Secondary (UpToDate) is promoted without --force, and every
# offset in the ledger is read back through NBD from it: the block must be
# intact (magic, offset, checksum) and its generation at least the last one
# acknowledged for that offset (a later write that was in flight may have
# landed; an acknowledged one may never be missing), and one that was issued
# for that offset.
#
# Each round runs on a new pair; the rounds alternate cache=none and
# cache=writeback, and each kills after a slightly different count.
#
# Environment: HB_T0220_WRITES (acknowledged writes before the kill, default
# 3000, plus up to 10% at random), HB_T0220_DEPTH (requests in flight,
# default 16), HB_T0220_ROUNDS (kill rounds, default 4), HB_T0220_CACHES
# (the cache= modes to cycle through, default "none writeback").
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo openssl truncate /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"
skip_unless "python3-libnbd is not installed" /usr/bin/python3 -c 'import nbd'

size=$((16 << 20))
writes=${HB_T0220_WRITES:-3000}
depth=${HB_T0220_DEPTH:-16}
rounds=${HB_T0220_ROUNDS:-4}
read -r -a caches <<<"${HB_T0220_CACHES:-none writeback}"

# The block format, shared by the writer and the checker.
cat >"$T/block.py" <<'EOF'
import hashlib, struct
BS = 4096
MAGIC = b"HBLEDGR1"
HDR = struct.Struct("<8sQQ")          # magic, generation, offset
SUM = 16                              # blake2b-128 of everything before it

def make(gen, off, fill):
    body = HDR.pack(MAGIC, gen, off) + fill[:BS - HDR.size - SUM]
    digest = hashlib.blake2b(body, digest_size=SUM).digest()
    return body + digest, digest.hex()

def parse(block):
    """(generation, offset, checksum hex) or a string saying what is wrong."""
    if block == bytes(BS):
        return "all zeros (never written)"
    magic, gen, off = HDR.unpack_from(block)
    if magic != MAGIC:
        return f"bad magic {magic!r}"
    body, digest = block[:BS - SUM], block[BS - SUM:]
    if hashlib.blake2b(body, digest_size=SUM).digest() != digest:
        return f"bad checksum (header says generation {gen}, offset {off})"
    return gen, off, digest.hex()
EOF

# The writer: keeps DEPTH writes in flight, never two at the same offset
# (the order of concurrent writes to one block is not defined). Each issued
# write is recorded in ISSUED before it is sent, each acknowledged one in
# the LEDGER as soon as its completion callback runs. After N acks it
# creates REACHED and goes on until a request fails or the connection dies;
# then it stops, keeps both files and exits 0. If nothing fails within 30 s
# of REACHED it exits 2.
cat >"$T/writer.py" <<'EOF'
import nbd, os, random, sys, time
sys.path.insert(0, os.path.dirname(sys.argv[0]))
import block

uri, size, n, depth, ledger_path, issued_path, reached = sys.argv[1:8]
size, n, depth = int(size), int(n), int(depth)
nblocks = size // block.BS
rng = random.Random()
fills = [os.urandom(block.BS) for _ in range(64)]

h = nbd.NBD()
h.connect_uri(uri)
ledger = open(ledger_path, "w", buffering=1)
issued_f = open(issued_path, "w", buffering=1)
busy = set()        # offsets with a write in flight
acked = failed = 0
first_error = None
gen = 0
reached_at = None

def completion(off, g, digest):
    def cb(err):
        global acked, failed, first_error, reached_at
        busy.discard(off)
        if err.value:
            failed += 1
            first_error = first_error or os.strerror(err.value)
        else:
            acked += 1
            ledger.write(f"{off} {g} {digest}\n")
            ledger.flush()
            if acked == n:
                open(reached, "w").close()
                reached_at = time.monotonic()
        return 1
    return cb

try:
    while first_error is None:
        if reached_at and time.monotonic() - reached_at > 30:
            print(f"writer: no failure within 30 s of the kill signal ({acked} acked)",
                  file=sys.stderr)
            sys.exit(2)
        while h.aio_in_flight() < depth:
            off = rng.randrange(nblocks) * block.BS
            if off in busy:
                continue
            gen += 1
            data, digest = block.make(gen, off, rng.choice(fills))
            issued_f.write(f"{off} {gen}\n")
            issued_f.flush()
            busy.add(off)
            h.aio_pwrite(data, off, completion=completion(off, gen, digest))
        h.poll(1000)
except nbd.Error as e:
    first_error = first_error or str(e)
finally:
    ledger.close()
    issued_f.close()
print(f"writer: stopped after {acked} acknowledged writes, {gen} issued, "
      f"{failed} failed by the server or the disconnection; first error: {first_error}",
      file=sys.stderr)
EOF

# The checker: reads every ledger offset from URI.
cat >"$T/check.py" <<'EOF'
import collections, nbd, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[0]))
import block

uri, ledger_path, issued_path = sys.argv[1:4]
last_acked = {}
acked_digest = {}
n = 0
for line in open(ledger_path):
    off, gen, digest = line.split()
    off, gen = int(off), int(gen)
    n += 1
    if gen > last_acked.get(off, 0):
        last_acked[off] = gen
    acked_digest[(off, gen)] = digest
issued = collections.defaultdict(set)
for line in open(issued_path):
    off, gen = map(int, line.split())
    issued[off].add(gen)

h = nbd.NBD()
h.connect_uri(uri)
bad, newer = [], 0
for off in sorted(last_acked):
    got = block.parse(h.pread(block.BS, off))
    want = last_acked[off]
    if isinstance(got, str):
        bad.append(f"offset {off}: {got}; last acknowledged generation {want}")
        continue
    gen, at, digest = got
    if at != off:
        bad.append(f"offset {off}: holds the block written for offset {at} (generation {gen})")
    elif gen < want:
        bad.append(f"offset {off}: generation {gen}, older than the acknowledged {want}")
    elif gen not in issued[off]:
        bad.append(f"offset {off}: generation {gen} was never issued for it")
    elif gen == want and digest != acked_digest[(off, gen)]:
        bad.append(f"offset {off}: generation {gen} with another checksum than acknowledged")
    elif gen > want:
        newer += 1
h.shutdown()
print(f"check: {n} acknowledged writes over {len(last_acked)} offsets; "
      f"{len(last_acked) - newer - len(bad)} hold the last acknowledged write, "
      f"{newer} a later unacknowledged one, {len(bad)} are wrong", file=sys.stderr)
for b in bad[:20]:
    print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF

writer_pid=
on_exit '[[ -z $writer_pid ]] || kill "$writer_pid" 2>/dev/null || true'

reached_or_stopped() {   # WRITER-PID
    [[ -e $T/reached ]] || ! kill -0 "$1" 2>/dev/null
}

one_round() {   # ROUND
    local round=$1 wpid rc t0=$SECONDS n
    local cache=${caches[(round - 1) % ${#caches[@]}]}
    n=$(( writes + RANDOM % (writes / 10 + 1) ))
    rm -f "$T/alpha.img" "$T/bravo.img" "$T/reached" "$T/ledger" "$T/issued"
    make_pair "$size" cert
    start_pair cache="$cache"
    wait_for 30 "alpha and bravo to connect" node_is alpha connection Connected
    hactl_on alpha promote --force
    wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate

    timeout -k 5 $(( 60 + n / 50 )) /usr/bin/python3 "$T/writer.py" "${HB_URI[alpha]}" "$size" \
        "$n" "$depth" "$T/ledger" "$T/issued" "$T/reached" 2>"$T/writer.err" &
    wpid=$!
    writer_pid=$wpid
    wait_for $(( 20 + n / 100 )) "$n acknowledged writes" reached_or_stopped "$wpid"
    kill -0 "$wpid" 2>/dev/null || fail "the writer stopped before the kill: $(cat "$T/writer.err")"

    kill -9 "${HB_PID[alpha]}"
    wait "${HB_PID[alpha]}" 2>/dev/null || true
    unset "HB_PID[alpha]"
    log "round $round (cache=$cache): killed alpha after $(wc -l <"$T/ledger") acknowledged writes"

    rc=0; wait "$wpid" || rc=$?
    writer_pid=
    [[ $rc -eq 0 ]] || fail "writer exited $rc: $(cat "$T/writer.err")"
    log "$(tail -n 1 "$T/writer.err")"

    wait_for 15 "bravo to notice alpha is gone" node_is bravo connection Connecting
    assert_eq "$(node_field bravo disk)" UpToDate "bravo's disk after losing its Primary"
    hactl_on bravo promote || fail "plain 'hactl promote' on bravo (UpToDate, peer gone) failed"
    assert_eq "$(node_field bravo role)" Primary "bravo's role after promotion"

    /usr/bin/python3 "$T/check.py" "${HB_URI[bravo]}" "$T/ledger" "$T/issued" 2>"$T/check.err" ||
        fail "round $round: acknowledged writes missing on the promoted bravo: $(cat "$T/check.err")"
    log "round $round: $(head -n 1 "$T/check.err") (${SECONDS}s total, this round $((SECONDS - t0))s)"
    stop_hablock bravo
}

for (( r = 1; r <= rounds; r++ )); do
    one_round "$r"
done
