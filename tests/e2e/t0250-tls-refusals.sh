#!/usr/bin/env bash
# t0250-tls-refusals: impostors on the replication link (invariant 5: the
# peer is authenticated before a byte of data moves; garbage yields a clear
# error and a dropped connection, never a crash).
#
# 1. bravo connects to alpha's address; alpha is not running, an impostor
#    listens there instead: openssl s_server posing as alpha with an expired
#    certificate, one from another CA, one for the wrong node (charlie); a raw
#    server answering with an NBD greeting in clear; one answering with
#    random bytes.
# 2. bravo is told to stay StandAlone and alpha starts; impostors of bravo
#    connect to it: openssl s_client with a certificate from another CA,
#    without a certificate, for the wrong node, expired (bravo's own name and
#    key, made here); raw clients sending an HTTP request, an NBD greeting,
#    4 KiB of random bytes, a TLS record header followed by garbage, nothing
#    at all (must be dropped after connect-timeout); bravo's real certificate
#    followed by random bytes inside the TLS session (no hablock frame);
#    a client from 127.0.0.2, not bravo's address (127.0.0.1): dropped at
#    accept, before TLS, as DRBD does;
#    bravo's certificate, a valid HELLO, then a frame type this version
#    does not act on (RESYNC_DATA) announcing 64 MiB of payload: refused
#    from its header, without waiting for (or buffering) the payload; and
#    a real hablock node posing as bravo with TLS off, and one whose
#    ciphersuites share none with alpha's.
#    For each: the node logs one line naming the problem, stays up, answers
#    `hactl status`, and waits for its peer again.
# 3. `tls = off` ([resource]) and `mode = off` ([tls]) each log a warning
#    naming the insecure choice and the line that made it.
# 4. The real pair connects (both processes went through all of the above),
#    alpha is promoted and serves NBD writes and reads, mirrored to bravo.
# 5. A node whose connections keep being refused retries with backoff: an
#    endpoint that accepts TCP and then refuses must not see a reconnect
#    storm (at most 10 attempts in a 3 s window; 100 ms doubling backoff
#    makes about 6).
# Every openssl and raw client/server runs under timeout(1).
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit nbdinfo nbdcopy cmp openssl timeout ss
[[ -x $HACTL ]] || skip "hactl not built"

size=$((64 << 20))
make_pair "$size" cert
tls=$T/tls
pa=$(pair_port alpha)
[[ -n $pa ]] || fail "no address for alpha in $T/r0.conf"

# ---- tools -------------------------------------------------------------------

# raw.py MODE PORT FILE LIMIT_S: a raw TCP peer on 127.0.0.1.
#   client: connect, send FILE (- for nothing), then wait until the other
#           side drops the connection: exit 0, or 3 if it did not within LIMIT_S
#   server: accept one connection within LIMIT_S (else exit 3), send FILE,
#           wait until the other side drops it (exit 0) or LIMIT_S passed (3)
#   count:  accept connections and close each at once, for LIMIT_S seconds
#           after the first one; print how many came
cat >"$T/raw.py" <<'PY'
import socket, sys, time
mode, port, path, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
data = b"" if path == "-" else open(path, "rb").read()
deadline = time.monotonic() + limit

def dropped(c):
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        c.settimeout(left)
        try:
            if not c.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True          # a reset is a drop too

def send(c):
    try:
        c.sendall(data)
    except OSError:
        pass                     # dropped before we finished: fine

if mode == "client":
    c = socket.create_connection(("127.0.0.1", port), timeout=limit)
    send(c)
    sys.exit(0 if dropped(c) else 3)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
if mode == "server":
    s.settimeout(limit)
    try:
        c, _ = s.accept()
    except socket.timeout:
        sys.exit(3)
    send(c)
    sys.exit(0 if dropped(c) else 3)
n, end = 0, None
s.settimeout(30)
while True:
    if end is not None:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
    try:
        c, _ = s.accept()
    except socket.timeout:
        break
    n += 1
    if end is None:
        end = time.monotonic() + limit
    c.close()
print(n)
PY
# An array, not a function: "${RAW[@]}" ... & gives timeout(1)'s own PID.
RAW=(timeout 40 /usr/bin/python3 "$T/raw.py")

# Byte strings for the raw peers.
printf 'GET / HTTP/1.1\r\nHost: alpha\r\n\r\n' >"$T/http.bin"
printf 'NBDMAGICIHAVEOPT\0\0\0\3' >"$T/nbd.bin"
# Random, but not starting like a TLS record (content type 0x14-0x18 with
# major version 3: one chance in ~13000): the expected line is "not TLS".
until head -c 4096 /dev/urandom >"$T/random.bin"
      [[ $(od -An -tu1 -j1 -N1 "$T/random.bin" | tr -d ' ') != 3 ]]; do :; done
# A TLS handshake record header (ClientHello, 64 bytes) around garbage.
{ printf '\x16\x03\x01\x00\x40'; head -c 64 /dev/urandom; } >"$T/tlsjunk.bin"

# An expired certificate for bravo (bravo's key, the cluster CA): alpha-
# expired.crt names alpha, so alpha would refuse it for its name first.
mk_bravo_expired() {
    local d=$tls/.expired
    mkdir -p "$d"
    : >"$d/index.txt"
    echo 3000 >"$d/serial"
    cat >"$d/ca.cnf" <<EOF
[ ca ]
default_ca = x
[ x ]
database = $d/index.txt
new_certs_dir = $d
serial = $d/serial
default_md = sha256
policy = p
unique_subject = no
copy_extensions = none
[ p ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:bravo
EOF
    { timeout 20 openssl req -new -key "$tls/bravo.key" -subj /CN=bravo -out "$d/bravo.csr" 2>"$d/err" &&
      timeout 20 openssl ca -batch -config "$d/ca.cnf" -cert "$tls/ca.crt" -keyfile "$tls/ca.key" \
        -extensions leaf -startdate 20200101000000Z -enddate 20200102000000Z -notext \
        -in "$d/bravo.csr" -out "$tls/bravo-expired.crt" 2>>"$d/err"; } ||
        fail "cannot make bravo-expired.crt: $(cat "$d/err")"
}
mk_bravo_expired

# Background impostors, stopped by PID at exit (whatever state they are in).
reap() {   # PID
    if _alive "$1"; then kill -TERM "$1" 2>/dev/null; fi
    wait "$1" 2>/dev/null || true
}

# expect_refusal NODE PEER ERE WHAT: after log_mark NODE, NODE has logged a
# line "peer PEER: ...ERE..." (the reason, on one line); it is alive, answers
# hactl, and waits for its peer again.
_refusal_logged() { log_since "$1" | grep -Eq -- "peer $2: .*$3"; }
expect_refusal() {
    local node=$1 peer=$2 ere=$3 what=$4 line
    wait_for 20 "$node to log why it refused $what (/$ere/)" _refusal_logged "$node" "$peer" "$ere" ||
        { log_since "$node" | tail -n 5 >&2; return 1; }
    line=$(log_since "$node" | grep -E -m1 -- "peer $peer: .*$ere")
    _alive "${HB_PID[$node]}" || fail "$node died after $what"
    hactl_on "$node" status >/dev/null || fail "$node does not answer hactl status after $what"
    wait_for 10 "$node to wait for its peer again after $what" node_is "$node" connection Connecting
    log "ok: $node refused $what: ${line#nbdkit: }"
}

# ---- 1. impostors of alpha, bravo connecting ------------------------------

start_hablock --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo

# s_server_as_alpha ERE WHAT CERT KEY: one connection to an openssl s_server
# on alpha's address presenting CERT.
s_server_as_alpha() {
    local ere=$1 what=$2 cert=$3 key=$4 pid rc=0
    log_mark bravo
    timeout 30 openssl s_server -accept "127.0.0.1:$pa" -naccept 1 -tls1_3 -quiet \
        -cert "$cert" -key "$key" -CAfile "$tls/ca.crt" -Verify 1 \
        </dev/null >"$T/s_server.log" 2>&1 &
    pid=$!
    on_exit "reap $pid"
    expect_refusal bravo alpha "$ere" "$what"
    wait "$pid" || rc=$?   # -naccept 1: it ends with that connection
    [[ $rc -ne 124 ]] || fail "openssl s_server ($what) still had the connection after 30 s"
}

s_server_as_alpha 'peer certificate expired \(alpha' "an expired certificate for alpha" \
    "$tls/alpha-expired.crt" "$tls/alpha.key"
s_server_as_alpha 'unknown CA.*other-test-ca' "a certificate for alpha from another CA" \
    "$tls/alpha-other.crt" "$tls/alpha-other.key"
s_server_as_alpha 'peer certificate names charlie, expected alpha' "a certificate for charlie" \
    "$tls/charlie.crt" "$tls/charlie.key"

# raw_server_as_alpha ERE WHAT FILE: a raw server on alpha's address that
# answers bravo's ClientHello with FILE.
raw_server_as_alpha() {
    local ere=$1 what=$2 file=$3 pid rc=0
    log_mark bravo
    "${RAW[@]}" server "$pa" "$file" 30 &
    pid=$!
    on_exit "reap $pid"
    expect_refusal bravo alpha "$ere" "$what"
    wait "$pid" || rc=$?
    [[ $rc -eq 0 ]] || fail "bravo did not drop the connection to the raw server ($what): status $rc"
}

raw_server_as_alpha 'not TLS \(plaintext\?\): peer sent "NBDMAGIC' "an NBD greeting in clear" "$T/nbd.bin"
raw_server_as_alpha 'not TLS \(plaintext\?\): first bytes' "4 KiB of random bytes" "$T/random.bin"

# bravo stays StandAlone while alpha is impersonated on the other side.
hactl_on bravo disconnect
wait_for 10 "bravo to be StandAlone" node_is bravo connection StandAlone

# ---- 2. impostors of bravo, alpha listening ---------------------------------

start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha
node_is alpha connection Connecting || fail "alpha is not waiting for bravo: $(node_field alpha connection)"

# s_client_as_bravo ERE WHAT [OPENSSL-ARGS...]: one openssl s_client.
s_client_as_bravo() {
    local ere=$1 what=$2 rc=0; shift 2
    log_mark alpha
    timeout 20 openssl s_client -connect "127.0.0.1:$pa" -tls1_3 -CAfile "$tls/ca.crt" \
        -verify_hostname alpha "$@" </dev/null >"$T/s_client.log" 2>&1 || rc=$?
    [[ $rc -ne 124 ]] || fail "openssl s_client ($what) hung for 20 s"
    expect_refusal alpha bravo "$ere" "$what"
    assert_grep "$ere" <(node_field alpha last_error) "alpha's last_error after $what"
}

s_client_as_bravo 'unknown CA.*other-test-ca' "a certificate from another CA" \
    -cert "$tls/alpha-other.crt" -key "$tls/alpha-other.key"
s_client_as_bravo 'peer sent no certificate' "a client without a certificate"
s_client_as_bravo 'peer certificate names charlie, expected bravo' "a certificate for charlie" \
    -cert "$tls/charlie.crt" -key "$tls/charlie.key"
s_client_as_bravo 'peer certificate expired \(bravo' "an expired certificate for bravo" \
    -cert "$tls/bravo-expired.crt" -key "$tls/bravo.key"

# The right certificate, then bytes that are no hablock frame.
# -nocommands: otherwise s_client takes a chunk of its input that starts
# with Q, R, K or k as a command (quit, renegotiate, key update) and does
# not send it, and then this test would fail about once in 64 runs.
log_mark alpha
rc=0
timeout 20 openssl s_client -connect "127.0.0.1:$pa" -tls1_3 -CAfile "$tls/ca.crt" \
    -verify_hostname alpha -cert "$tls/bravo.crt" -key "$tls/bravo.key" -nocommands \
    <"$T/random.bin" >"$T/s_client.log" 2>&1 || rc=$?
[[ $rc -ne 124 ]] || fail "openssl s_client (random frames) hung for 20 s"
expect_refusal alpha bravo 'bad (frame|HELLO).*(magic|length|version|type)' \
    "random bytes inside an authenticated TLS session"

_stranger_logged() { log_since alpha | grep -q "refused a connection from 127.0.0.2: not the peer's address (127.0.0.1)"; }

# From another address than bravo's: dropped before any TLS. (All of
# 127.0.0.0/8 is local here; the client binds to 127.0.0.2.)
cat >"$T/stranger.py" <<'PY'
import socket, sys
s = socket.socket()
s.bind(("127.0.0.2", 0))
s.settimeout(15)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"\x16\x03\x01")               # the start of a TLS ClientHello
try:
    sys.exit(0 if s.recv(1) == b"" else 3)  # closed without a byte
except ConnectionError:
    sys.exit(0)
PY
log_mark alpha
rc=0
timeout 20 /usr/bin/python3 "$T/stranger.py" "$pa" || rc=$?
[[ $rc -eq 0 ]] || fail "alpha did not drop a connection from 127.0.0.2 (status $rc)"
wait_for 10 "alpha to log the stranger" _stranger_logged
log "ok: alpha: $(log_since alpha | grep -m1 'not the peer')"

# framed.py PORT TLSDIR SIZE: bravo's certificate, alpha's name checked; a
# HELLO as bravo (Secondary, Inconsistent, like a new node), then the
# 40-byte header of a RESYNC_DATA announcing 64 MiB, and no payload. Waits
# until alpha drops the connection: exit 0, or 3 after 15 s.
cat >"$T/framed.py" <<'PY'
import socket, ssl, struct, sys, time
port, tls, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_verify_locations(f"{tls}/ca.crt")
ctx.load_cert_chain(f"{tls}/bravo.crt", f"{tls}/bravo.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=15),
                    server_hostname="alpha")
MAGIC, VERSION, HELLO, RESYNC_DATA = 0x4b4c4248, 2, 1, 13
def header(ftype, count, payload_len):
    return struct.pack("<IHHIIQQII", MAGIC, VERSION, ftype, 0, count, 0, 0, payload_len, 0)
hello = struct.pack("<IHBBIIQ4Q64s64s8x", VERSION, 2, 2, 2, 0, 4096, size,
                    0, 0, 0, 0, b"r0", b"bravo")
assert len(hello) == 192
s.sendall(header(HELLO, 0, len(hello)) + hello)
s.sendall(header(RESYNC_DATA, 64 << 20, 64 << 20))
deadline = time.monotonic() + 15
try:
    while time.monotonic() < deadline:
        if not s.recv(65536):
            sys.exit(0)
except (ConnectionError, ssl.SSLError, OSError):
    sys.exit(0)
sys.exit(3)
PY

log_mark alpha
rc=0
timeout 40 /usr/bin/python3 "$T/framed.py" "$pa" "$tls" "$size" || rc=$?
[[ $rc -eq 0 ]] || fail "alpha did not drop a peer that announced 64 MiB of RESYNC_DATA (status $rc)"
expect_refusal alpha bravo 'unexpected RESYNC_DATA frame' \
    "a RESYNC_DATA frame (not in this version) after a valid handshake"

# raw_client_as_bravo ERE WHAT FILE: a raw client sends FILE; alpha must
# drop it.
raw_client_as_bravo() {
    local ere=$1 what=$2 file=$3 rc=0
    log_mark alpha
    "${RAW[@]}" client "$pa" "$file" 20 || rc=$?
    [[ $rc -eq 0 ]] || fail "alpha did not drop a client that sent $what (status $rc)"
    expect_refusal alpha bravo "$ere" "$what"
}

raw_client_as_bravo 'not TLS \(plaintext\?\): peer sent "GET / HT' "an HTTP request" "$T/http.bin"
raw_client_as_bravo 'not TLS \(plaintext\?\): peer sent "NBDMAGIC' "an NBD greeting in clear" "$T/nbd.bin"
raw_client_as_bravo 'not TLS \(plaintext\?\): first bytes' "4 KiB of random bytes" "$T/random.bin"
raw_client_as_bravo 'TLS handshake: ' "a TLS record header around garbage" "$T/tlsjunk.bin"
# Silence: the one-at-a-time listener must not be held for ever.
raw_client_as_bravo 'handshake did not complete within 5000 ms' "a client that sends nothing" -

# A real hablock node posing as bravo with TLS off ([resource] tls = off).
sed -e '/^\[tls\]$/,/^\[node/{/^\[node/!d}' \
    -e "s|^control = .*|control = $T/plain-%n.ctl|" \
    -e 's|^protocol = C$|protocol = C\ntls = off|' \
    -e "s|/bravo\\.img\$|/plain.img|" "$T/r0.conf" >"$T/plain.conf"
truncate -s "$size" "$T/plain.img"
off_line=$(grep -n '^tls = off$' "$T/plain.conf" | cut -d: -f1)
log_mark alpha
start_hablock --ctl "$T/plain-bravo.ctl" plain config="$T/plain.conf" node=bravo
expect_refusal alpha bravo 'not TLS \(plaintext\?\): first bytes 48 42 4c 4b' \
    "a hablock node with TLS off (its HELLO in clear)"
assert_grep "TLS is off \\($T/plain.conf:$off_line\\).*not authenticated.*clear" "${HB_LOG[plain]}" \
    "the warning of the node with tls = off"
assert_eq "$(node_field plain tls.enabled)" false "tls.enabled of the node with tls = off"
stop_hablock plain

# A real hablock node posing as bravo, with bravo's certificate, whose
# ciphersuites share nothing with alpha's (the default list).
sed -e 's|^\[tls\]$|[tls]\nciphersuites = TLS_AES_128_CCM_SHA256|' \
    -e "s|^control = .*|control = $T/ccm-%n.ctl|" \
    -e "s|/bravo\\.img\$|/plain.img|" "$T/r0.conf" >"$T/ccm.conf"
grep -q '^ciphersuites = TLS_AES_128_CCM_SHA256$' "$T/ccm.conf" || fail "ccm.conf has no ciphersuites line"
log_mark alpha
start_hablock --ctl "$T/ccm-bravo.ctl" ccm config="$T/ccm.conf" node=bravo
expect_refusal alpha bravo 'no shared cipher \(ciphersuites differ' \
    "a hablock node whose ciphersuites share none with ours"
stop_hablock ccm

# ---- 3. [tls] mode = off warns too -----------------------------------------

sed -e '/^\[tls\]$/,/^\[node/{/^\[node/!d}' \
    -e 's|^\[node alpha\]$|[tls]\nmode = off\n[node alpha]|' \
    -e "s|^control = .*|control = $T/modeoff-%n.ctl|" \
    -e "s|/alpha\\.img\$|/plain.img|" \
    -e "s|:$pa\$|:$(_free_port 2 | grep -vxF "$(pair_port bravo)" | head -n 1)|" \
    "$T/r0.conf" >"$T/modeoff.conf"
off_line=$(grep -n '^mode = off$' "$T/modeoff.conf" | cut -d: -f1)
start_hablock --ctl "$T/modeoff-alpha.ctl" modeoff config="$T/modeoff.conf" node=alpha
assert_grep "TLS is off \\($T/modeoff.conf:$off_line\\).*not authenticated.*clear" "${HB_LOG[modeoff]}" \
    "the warning of the node with mode = off"
stop_hablock modeoff

# ---- 4. the real pair still works --------------------------------------------

# Connections the TLS-off node queued on alpha's listener are refused first.
hactl_on bravo connect
wait_for 60 "alpha and bravo to connect" node_is alpha connection Connected
wait_for 10 "bravo to say Connected" node_is bravo connection Connected
assert_eq "$(node_field alpha tls.version)" TLSv1.3 "alpha tls.version"
assert_eq "$(node_field alpha tls.peer)" bravo "alpha's authenticated peer"
assert_eq "$(node_field bravo tls.peer)" alpha "bravo's authenticated peer"
# The default ciphersuites put AES-128-GCM first.
assert_eq "$(node_field alpha tls.cipher)" TLS_AES_128_GCM_SHA256 "alpha tls.cipher"
assert_eq "$(node_field bravo tls.cipher)" TLS_AES_128_GCM_SHA256 "bravo tls.cipher"
hactl_on alpha promote --force
wait_for 10 "bravo to learn the pair is identical" node_is bravo disk UpToDate
head -c $((8 << 20)) /dev/urandom >"$T/src.bin"
nbdcopy --flush "$T/src.bin" "${HB_URI[alpha]}"
nbdcopy "${HB_URI[alpha]}" "$T/back.img"
cmp -n $((8 << 20)) "$T/src.bin" "$T/back.img" || fail "alpha read back other bytes than written"
cmp -n $((8 << 20)) "$T/src.bin" "$T/bravo.img" || fail "bravo's disk does not hold alpha's writes"
assert_eq "$(node_field alpha out_of_sync_bytes)" 0 "alpha out_of_sync_bytes"
log "ok: the real pair connected, alpha serves NBD, bravo mirrors it"

# ---- 5. backoff after a refused handshake ------------------------------------

# A third configuration whose alpha is a raw endpoint that accepts and at
# once closes every connection; its bravo (a new node, TLS on) must back off.
{ read -r cp; read -r cb; } < <(_free_port 2)
sed -e "s|^control = .*|control = $T/storm-%n.ctl|" \
    -e "s|/bravo\\.img\$|/storm.img|" \
    -e "s|:$pa\$|:$cp|" -e "s|:$(pair_port bravo)\$|:$cb|" "$T/r0.conf" >"$T/storm.conf"
truncate -s "$size" "$T/storm.img"
"${RAW[@]}" count "$cp" - 3 >"$T/count.out" &
count_pid=$!
on_exit "reap $count_pid"
wait_for 10 "the counting endpoint to listen" sh -c "ss -Hltn 'sport = :$cp' | grep -q ."
start_hablock --ctl "$T/storm-bravo.ctl" storm config="$T/storm.conf" node=bravo
rc=0; wait "$count_pid" || rc=$?
[[ $rc -eq 0 ]] || fail "the counting endpoint failed (status $rc)"
attempts=$(cat "$T/count.out")
lines=$(grep -c 'peer alpha:' "${HB_LOG[storm]}" || true)
log "a refused node made $attempts connection attempts in 3 s ($lines log lines)"
(( attempts >= 2 )) || fail "the node did not retry after a refused connection ($attempts attempts)"
(( attempts <= 10 )) ||
    fail "reconnect storm: $attempts connection attempts in 3 s against a peer that accepts and closes (expected backoff: about 6)"
stop_hablock storm
log "PASS (${SECONDS}s)"
