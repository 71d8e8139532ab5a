#!/usr/bin/env bash
# hactl against control sockets served with stub operations
# (tests/ctl-stub-server.c, and a fake server for bad responses): every
# command, the human and JSON status, and each exit status of the API,
# read from ctl/hactl.h: 0 ok, 1 error, 2 usage, 3 refused, 4 not running,
# 5 timeout. A failure prints exactly one line on stderr; a success none.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires timeout python3

HACTL=$HABLOCK_BUILDDIR/ctl/hactl
STUB=$HABLOCK_BUILDDIR/ctl/ctl-stub-server
[[ -x $HACTL ]] || fail "hactl not built: $HACTL"
[[ -x $STUB ]] || fail "ctl-stub-server not built: $STUB (meson -Dtests=true)"

# The exit codes as the header defines them; they must keep their numbers.
eval "$(sed -n 's|^#define \(HACTL_EXIT_[A-Z_]*\) *\([0-9]*\).*|\1=\2|p' "$HABLOCK_SRCDIR/ctl/hactl.h")"
assert_eq "${HACTL_EXIT_OK:-} ${HACTL_EXIT_ERROR:-} ${HACTL_EXIT_USAGE:-} ${HACTL_EXIT_REFUSED:-} ${HACTL_EXIT_NOT_RUNNING:-} ${HACTL_EXIT_TIMEOUT:-}" \
    "0 1 2 3 4 5" "exit codes in ctl/hactl.h"

# expect RC ERE CMD...: CMD exits RC within a deadline. Its stdout is kept in
# $T/out, its stderr in $T/err. RC 0: stderr is empty. Otherwise stderr is
# exactly one line, "hactl: ...", matching ERE (ignoring case).
expect() {
    local want=$1 re=$2 rc=0; shift 2
    timeout -k 5 30 "$@" >"$T/out" 2>"$T/err" || rc=$?
    if [[ $rc -ne $want ]]; then
        fail "expected exit $want, got $rc: $* (stderr: $(head -c 500 "$T/err"))"
    fi
    if [[ $want -eq 0 ]]; then
        [[ ! -s $T/err ]] || fail "stderr of a success: $*: $(cat "$T/err")"
        return 0
    fi
    [[ $(wc -l <"$T/err") -eq 1 ]] || fail "expected one line on stderr: $*: $(cat "$T/err")"
    grep -Eiq -- "^hactl: .*$re" "$T/err" || fail "stderr does not match /$re/: $*: $(cat "$T/err")"
    log "ok: exit $rc: $(cat "$T/err")"
}

# ---- stub servers ----------------------------------------------------------

declare -A STUB_PID=()

_answers() { "$HACTL" --socket "$1" --timeout 5 status >/dev/null 2>&1; }

# start_stub NAME OPTION...: a stub server on $T/NAME.ctl.
start_stub() {
    local name=$1; shift
    "$STUB" "$@" "$T/$name.ctl" >>"$T/$name.log" 2>&1 </dev/null &
    STUB_PID[$name]=$!
    on_exit "stop_stub $name"
    wait_for 10 "stub $name to answer on $T/$name.ctl" _answers "$T/$name.ctl"
}

# stop_stub NAME: SIGTERM; it must exit 0 within a deadline and remove its
# socket. Safe to call twice.
stop_stub() {
    local name=$1 pid=${STUB_PID[$1]:-} rc=0 deadline
    [[ -n $pid ]] || return 0
    unset "STUB_PID[$name]"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( SECONDS + 10 ))
    while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"; wait "$pid" || true
        fail "stub $name ignored SIGTERM"; return 1
    fi
    wait "$pid" || rc=$?
    [[ $rc -eq 0 ]] || { fail "stub $name exited with $rc: $(tail -n 5 "$T/$name.log")"; return 1; }
    [[ ! -e $T/$name.ctl ]] || { fail "stub $name left its socket"; return 1; }
}

# ---- usage: exit 2, nothing sent, no server needed ------------------------

expect 2 'no command' "$HACTL"
expect 2 "unknown command 'frobnicate'" "$HACTL" --socket "$T/x.ctl" frobnicate
expect 2 "unknown option '--bogus'" "$HACTL" --bogus status
expect 2 "status: unexpected argument '--force'" "$HACTL" --socket "$T/x.ctl" status --force
expect 2 "promote: unexpected argument '--json'" "$HACTL" --socket "$T/x.ctl" promote --json
expect 2 "connect: unexpected argument 'now'" "$HACTL" --socket "$T/x.ctl" connect now
expect 2 '--socket PATH or --resource NAME' "$HACTL" status
expect 2 'not both' "$HACTL" --socket "$T/x.ctl" --resource r0 status
expect 2 "--socket needs a path" "$HACTL" status --socket
expect 2 "--timeout: 'abc'" "$HACTL" --socket "$T/x.ctl" --timeout abc status
expect 2 "--timeout: '0'" "$HACTL" --socket "$T/x.ctl" --timeout 0 status
expect 2 "--timeout: '-1'" "$HACTL" --socket "$T/x.ctl" -t -1 status
expect 2 "--timeout: 'inf'" "$HACTL" --socket "$T/x.ctl" --timeout=inf status
expect 2 "'a/b' is not a resource name" "$HACTL" --resource a/b status
expect 2 "not a usable socket path" "$HACTL" --socket "$(printf '/tmp/%0200d' 0)" status
expect 2 "no command 'nope'" "$HACTL" help nope

# help and version: exit 0, on stdout
expect 0 '' "$HACTL" help
for c in status promote demote connect disconnect help; do
    assert_grep "^  $c\b" "$T/out" "hactl help lists $c"
done
assert_grep 'Exit status: 0 ok, 1 error, 2 usage, 3 refused, 4 not running, 5 timeout' "$T/out" "help's exit codes"
expect 0 '' "$HACTL" --help
assert_grep '^Usage: hactl' "$T/out" "hactl --help"
expect 0 '' "$HACTL" help promote
assert_grep '^Usage: hactl \[OPTIONS\] promote \[--force\]$' "$T/out" "hactl help promote"
expect 0 '' "$HACTL" demote --help
assert_grep 'demote \[--force\]' "$T/out" "hactl demote --help"
expect 0 '' "$HACTL" --version
assert_grep '^hactl [0-9]+\.[0-9]+' "$T/out" "hactl --version"

# ---- not running: exit 4 ---------------------------------------------------

expect 4 "no control socket $T/none\.ctl.*not running" "$HACTL" --socket "$T/none.ctl" status
name=hactl-test-absent-$$
expect 4 "/run/hablock/$name\.ctl" "$HACTL" --resource "$name" promote
# a stale socket: its server was killed and could not remove it
start_stub dead
kill -KILL "${STUB_PID[dead]}"
{ wait "${STUB_PID[dead]}"; } 2>/dev/null || true
unset "STUB_PID[dead]"
[[ -S $T/dead.ctl ]] || fail "a killed stub should leave its socket"
expect 4 "nothing serves the control socket $T/dead\.ctl" "$HACTL" --socket "$T/dead.ctl" status
# a new server takes the stale socket over
start_stub dead
expect 0 '' "$HACTL" --socket "$T/dead.ctl" status
stop_stub dead
expect 4 'not running' "$HACTL" --socket "$T/dead.ctl" status

# ---- status: human and JSON ------------------------------------------------

start_stub a --peer-role Primary
expect 0 '' "$HACTL" -s "$T/a.ctl" status
cat "$T/out" >&2
assert_grep '^resource: +r0$' "$T/out" "status resource"
assert_grep '^node: +alpha$' "$T/out" "status node"
assert_grep '^role: +Secondary$' "$T/out" "status role"
assert_grep '^disk: +UpToDate$' "$T/out" "status disk"
assert_grep '^connection: +Connected$' "$T/out" "status connection"
assert_grep '^peer role: +Primary$' "$T/out" "status peer role"
assert_grep '^out of sync: +0 B$' "$T/out" "status out of sync"
assert_grep '^io backend: +uring$' "$T/out" "status io backend"
assert_grep '^tls: +TLSv1\.3, TLS_AES_256_GCM_SHA384, peer beta$' "$T/out" "status tls"
assert_grep '^clients: +0$' "$T/out" "a member hactl shows by its name"
# aligned: every value starts in the same column
cols=$(sed -E 's/^([^:]*: +).*/\1/' "$T/out" | awk '{ print length($0) }' | sort -u | wc -l)
assert_eq "$cols" 1 "status values aligned in one column"
assert_eq "$(grep -c . "$T/out")" 10 "status lines"

expect 0 '' "$HACTL" --socket="$T/a.ctl" status --json
assert_eq "$(wc -l <"$T/out")" 1 "status --json is one line"
/usr/bin/python3 - "$T/out" <<'EOF' || fail "status --json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True, d
for k, v in [("resource", "r0"), ("node", "alpha"), ("role", "Secondary"),
             ("disk", "UpToDate"), ("connection", "Connected"),
             ("peer_role", "Primary"), ("io_backend", "uring")]:
    assert d[k] == v, (k, d)
assert d["out_of_sync_bytes"] == 0, d
assert d["tls"] == {"enabled": True, "version": "TLSv1.3",
                    "cipher": "TLS_AES_256_GCM_SHA384", "peer": "beta"}, d
EOF

# ---- promote and demote: refusals (3) and --force --------------------------

expect 3 'promote refused: peer beta is Primary' "$HACTL" -s "$T/a.ctl" promote
expect 0 '' "$HACTL" -s "$T/a.ctl" status
assert_grep '^role: +Secondary$' "$T/out" "a refused promote changes nothing"
expect 0 '' "$HACTL" -s "$T/a.ctl" promote --force
[[ ! -s $T/out ]] || fail "promote printed: $(cat "$T/out")"
expect 0 '' "$HACTL" -s "$T/a.ctl" status
assert_grep '^role: +Primary$' "$T/out" "promoted"
expect 0 '' "$HACTL" -s "$T/a.ctl" promote
assert_eq "$(cat "$T/out")" "already Primary" "promoting a Primary"
expect 0 '' "$HACTL" -s "$T/a.ctl" demote
expect 0 '' "$HACTL" -s "$T/a.ctl" demote
assert_eq "$(cat "$T/out")" "already Secondary" "demoting a Secondary"

start_stub b --role Primary --peer-role Secondary --clients 2
expect 3 'demote refused: 2 NBD clients connected' "$HACTL" -s "$T/b.ctl" demote
expect 0 '' "$HACTL" -s "$T/b.ctl" demote --force
expect 0 '' "$HACTL" -s "$T/b.ctl" status
assert_grep '^role: +Secondary$' "$T/out" "demoted by force"
assert_grep '^clients: +0$' "$T/out" "forced demote dropped the clients"

start_stub c --disk Inconsistent --connection StandAlone --peer-role Unknown --tls-off
expect 3 'promote refused: disk is Inconsistent, not UpToDate' "$HACTL" -s "$T/c.ctl" promote
expect 0 '' "$HACTL" -s "$T/c.ctl" status
assert_grep '^tls: +off$' "$T/out" "status with TLS off"
assert_grep '^out of sync: +3\.0 MiB \(3145728 bytes\)$' "$T/out" "out of sync in MiB"
expect 0 '' "$HACTL" status --json -s "$T/c.ctl"
assert_grep '^\{"ok":true,.*"tls":\{"enabled":false\}' "$T/out" "options after the command"

# ---- connect and disconnect ------------------------------------------------

expect 0 '' "$HACTL" -s "$T/c.ctl" connect
expect 0 '' "$HACTL" -s "$T/c.ctl" status
assert_grep '^connection: +Connected$' "$T/out" "connected"
expect 0 '' "$HACTL" -s "$T/c.ctl" disconnect
expect 0 '' "$HACTL" -s "$T/c.ctl" status
assert_grep '^connection: +StandAlone$' "$T/out" "disconnected"

# ---- errors: exit 1 --------------------------------------------------------

start_stub d --fail-connect
expect 1 'connect failed: cannot reach peer beta at 192\.0\.2\.1:7789' "$HACTL" -s "$T/d.ctl" connect
# writing the output fails
if [[ -w /dev/full ]]; then
    rc=0; "$HACTL" -s "$T/d.ctl" status >/dev/full 2>"$T/err" || rc=$?
    assert_eq "$rc" 1 "status to /dev/full"
    assert_eq "$(cat "$T/err")" "hactl: cannot write the output: No space left on device" \
        "status to /dev/full"
fi
# a reader that has gone (`hactl status | head -0`): exit 1 and one line, not
# death by SIGPIPE (a shell reports 141, outside the API)
rc=$(/usr/bin/python3 -c '
import os, subprocess, sys
r, w = os.pipe()
os.close(r)
with open(sys.argv[1], "w") as err:
    print(subprocess.run(sys.argv[2:], stdout=w, stderr=err).returncode)
' "$T/err" "$HACTL" -s "$T/d.ctl" status)
assert_eq "$rc" 1 "status to a pipe nobody reads"
assert_eq "$(cat "$T/err")" "hactl: cannot write the output: Broken pipe" "status to a pipe nobody reads"

# A fake server answering each request with a fixed reply (or, "silent",
# never), to see hactl handle what a real server never sends.
fake() {   # NAME REPLY
    /usr/bin/python3 - "$T/$1.ctl" "$2" <<'EOF' >"$T/$1.log" 2>&1 &
import socket, sys
path, reply = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
held = []
while True:
    c, _ = s.accept()
    c.recv(4096)
    if reply == "silent":
        held.append(c)
        continue
    if reply != "close":
        c.sendall(reply.encode("utf-8", "surrogateescape"))
    c.close()
EOF
    local pid=$!
    on_exit "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
    wait_for 10 "fake server $1" test -S "$T/$1.ctl"
}

fake garbage $'this is not JSON\n'
expect 1 "malformed response from $T/garbage\.ctl: at byte 0" "$HACTL" -s "$T/garbage.ctl" status
fake close close
expect 1 'closed the connection without a response' "$HACTL" -s "$T/close.ctl" promote
fake half '{"ok":tr'
expect 1 'closed the connection in the middle of a response' "$HACTL" -s "$T/half.ctl" status
fake nook $'{"role":"Primary"}\n'
expect 1 'no boolean "ok"' "$HACTL" -s "$T/nook.ctl" status
fake neg $'{"ok":false,"code":-22,"error":"malformed request: whatever"}\n'
expect 1 'malformed request: whatever' "$HACTL" -s "$T/neg.ctl" status
# a refusal code from any server is exit 3; control characters are not printed
fake pos $'{"ok":false,"code":42,"error":"no\\u001b[31m way\\nreally"}\n'
expect 3 'no\?\[31m way\?really$' "$HACTL" -s "$T/pos.ctl" demote
fake mute $'{"ok":false}\n'
expect 1 'gave no reason' "$HACTL" -s "$T/mute.ctl" connect
# a server-side timeout is a timeout
fake late $'{"ok":false,"code":-110,"error":"no complete request within 5000 ms"}\n'
expect 5 'no complete request' "$HACTL" -s "$T/late.ctl" status

# ---- timeout: exit 5 -------------------------------------------------------

fake silent silent
start=$SECONDS
expect 5 "timed out after 0\.5s waiting for a response from $T/silent\.ctl" \
    "$HACTL" --timeout 0.5 -s "$T/silent.ctl" status
(( SECONDS - start <= 3 )) || fail "--timeout 0.5 took $(( SECONDS - start ))s"

start_stub slow --delay-ms 2000
start=$SECONDS
expect 5 'timed out after 0\.3s' "$HACTL" -s "$T/slow.ctl" -t 0.3 promote
(( SECONDS - start <= 2 )) || fail "--timeout 0.3 took $(( SECONDS - start ))s"
# the server finished the command it had started, and still serves
expect 0 '' "$HACTL" -s "$T/slow.ctl" -t 10 status
assert_grep '^role: +Primary$' "$T/out" "the timed-out promote went through"

# ---- the servers stop cleanly ----------------------------------------------

for s in a b c d slow; do stop_stub "$s"; done
expect 4 'not running' "$HACTL" -s "$T/a.ctl" status
