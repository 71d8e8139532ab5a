# Sourced by every tests/e2e/tNNNN-*.sh test (which also `set -euo pipefail`).
#
# Exit status: 0 pass, 77 skip, anything else fail. Every test gets:
#   $T               its own temp dir under /var/tmp (a real fs: O_DIRECT),
#                    removed at exit unless HABLOCK_KEEP_TMP=1
#   on_exit CMD      push CMD on the cleanup stack (run last-in first-out)
#   start_hablock    a server on a Unix socket (or TCP), stopped by PID at exit
#   requires, skip_unless, must_fail, wait_for, assert_*, for_each_backend
# In a cleanup step `fail` logs, marks the test failed and returns 1 instead
# of exiting, so that the remaining steps still run: a function that may run
# as a cleanup step writes `fail ...; return 1`.
# shellcheck shell=bash

: "${HABLOCK_SRCDIR:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${HABLOCK_BUILDDIR:=$HABLOCK_SRCDIR/build}"
: "${HABLOCK_PLUGIN:=$HABLOCK_BUILDDIR/nbdkit-plugin/nbdkit-hablock-plugin.so}"
: "${HABLOCK_SANITIZE:=none}"
# The distribution's python3 has the nbd module; a pyenv one may shadow it.
PATH=/usr/bin:/usr/sbin:$PATH
TEST_NAME=$(basename "$0" .sh)

log()  { printf '%s: %s\n' "$TEST_NAME" "$*" >&2; }
fail() {
    log "FAIL: $*"
    [[ -n $_in_cleanup ]] || exit 1
    _late_failure=1
    return 1
}
skip() { log "SKIP: $*"; exit 77; }

# requires CMD...: skip unless every command is installed.
requires() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || skip "required command not found: $c"
    done
}

# skip_unless REASON CMD...: skip with REASON unless CMD succeeds.
skip_unless() {
    local reason=$1; shift
    "$@" >/dev/null 2>&1 || skip "$reason"
}

# ---- cleanup stack ---------------------------------------------------------

_cleanups=()
_in_cleanup=
_late_failure=   # a cleanup step found a failure (server crash, ASan report)

on_exit() { _cleanups+=("$1"); }

_run_cleanups() {
    local rc=$? i name
    set +e
    trap - EXIT ERR
    _in_cleanup=1
    for (( i = ${#_cleanups[@]} - 1; i >= 0; i-- )); do
        eval "${_cleanups[i]}"
    done
    if [[ $rc -eq 0 && -n $_late_failure ]]; then rc=1; fi
    if [[ $rc -ne 0 && $rc -ne 77 ]]; then
        for name in "${!HB_LOG[@]}"; do
            log "---- last lines of server $name's log (${HB_LOG[$name]}) ----"
            tail -n 40 "${HB_LOG[$name]}" >&2
        done
    fi
    if [[ ${HABLOCK_KEEP_TMP:-0} = 1 ]]; then
        log "keeping $T"
    else
        rm -rf "$T"
    fi
    exit "$rc"
}
trap _run_cleanups EXIT
# Say which command stopped the test under `set -e`, and where.
set -o errtrace
trap 'log "FAIL: status $? from: $BASH_COMMAND (${BASH_SOURCE[0]}:$LINENO)"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

T=$(mktemp -d /var/tmp/hablock-e2e.XXXXXX)

# ---- waiting and failing ---------------------------------------------------

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds; fail after SECONDS.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$(( SECONDS + secs ))
    until "$@"; do
        (( SECONDS < deadline )) || { fail "timed out after ${secs}s waiting for $what"; return 1; }
        sleep 0.1
    done
}

# must_fail CMD...: CMD must exit with a normal failure status: not 0, not a
# signal (>128), not timeout(1)'s 124, not "cannot run" (126, 127). Its
# stderr is kept in $T/must_fail.err; one line reporting it is printed.
must_fail() {
    local rc=0
    "$@" 2>"$T/must_fail.err" || rc=$?
    case $rc in
    0)       fail "expected failure, but it succeeded: $*" ;;
    124)     fail "timed out instead of failing: $*" ;;
    12[5-7]) fail "could not run (status $rc): $*" ;;
    *)       (( rc < 128 )) || fail "killed by signal $(( rc - 128 )) instead of failing: $*" ;;
    esac
    log "ok: failed with status $rc: $(head -n 3 "$T/must_fail.err" | tr '\n' ' ')"
}

# ---- assertions ------------------------------------------------------------

assert_eq() {   # ACTUAL EXPECTED WHAT
    [[ $1 == "$2" ]] || fail "$3: expected '$2', got '$1'"
}

assert_same_bytes() {   # FILE1 FILE2 WHAT
    cmp -- "$1" "$2" >&2 || fail "$3: $1 and $2 differ"
}

assert_grep() {   # ERE FILE WHAT
    grep -Eq -- "$1" "$2" || fail "$3: no line of $2 matches /$1/"
}

# assert_one_error_line FILE ERE...: FILE (a server's stderr) has exactly
# one line saying "error", and that line matches every ERE (ignoring case).
assert_one_error_line() {
    local file=$1 lines n re; shift
    lines=$(grep -i 'error' "$file" || true)
    n=$(grep -c . <<<"$lines" || true)
    [[ $n -eq 1 ]] || fail "expected one error line in $file, got $n: $(cat "$file")"
    for re in "$@"; do
        grep -Eiq -- "$re" <<<"$lines" || fail "error line does not match /$re/: $lines"
    done
}

# ---- the server ------------------------------------------------------------

declare -A HB_PID=() HB_SOCK=() HB_URI=() HB_PORT=() HB_LOG=()

# NBDKIT: the command that runs nbdkit, under the sanitizer runtime when the
# build uses ASan (its runtime must be loaded first; leaks in nbdkit itself
# are not ours). An array, so that timeout(1) can run it too.
NBDKIT=(nbdkit)
if [[ $HABLOCK_SANITIZE == *address* ]]; then
    # asan-early.so (tests/asan-early.c) keeps nbdkit from hanging at exit.
    NBDKIT=(env "LD_PRELOAD=$(gcc -print-file-name=libasan.so)${HABLOCK_ASAN_EARLY:+ $HABLOCK_ASAN_EARLY}"
            "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
            "UBSAN_OPTIONS=print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
            nbdkit)
fi

_alive() {   # PID: running (a zombie is dead)
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ $state != Z* ]]
}

# _free_port [N]: N (default 1) distinct free loopback TCP ports, one per
# line. All N sockets stay bound until every port is chosen: two separate
# calls may be given the same port (the kernel reuses a port freed a
# moment ago), which once gave both nodes of a pair one address.
_free_port() {
    /usr/bin/python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "${1:-1}"
}

_hablock_ready() {   # NAME
    local rc=0
    if ! _alive "${HB_PID[$1]}"; then
        wait "${HB_PID[$1]}" || rc=$?
        unset "HB_PID[$1]"
        fail "server $1 exited with status $rc during start: $(tail -n 5 "${HB_LOG[$1]}")"
    fi
    [[ -s $T/$1.pid ]] && nbdinfo --size "${HB_URI[$1]}" >/dev/null 2>&1
}

# start_hablock [--tcp] NAME ARG...: serve with the plugin in the background.
# ARGs starting with '-' are nbdkit options (attached form: -Dhablock.x=1),
# the others plugin parameters. Listens on $T/NAME.sock (or with --tcp on
# 127.0.0.1 and a free port); waits until it answers. Sets HB_URI[NAME],
# HB_SOCK[NAME] (Unix) or HB_PORT[NAME] (TCP), HB_PID[NAME], HB_LOG[NAME]
# (its stdout and stderr).
start_hablock() {
    local tcp='' ctl=''
    if [[ $1 == --tcp ]]; then tcp=1; shift; fi
    if [[ $1 == --ctl ]]; then ctl=$2; shift 2; fi
    local name=$1; shift
    local -a opts=() params=() listen
    local a port
    for a in "$@"; do
        if [[ $a == -* ]]; then opts+=("$a"); else params+=("$a"); fi
    done
    if [[ -n $tcp ]]; then
        port=$(_free_port)
        listen=(-i 127.0.0.1 -p "$port")
        # shellcheck disable=SC2034   # for the tests that use --tcp
        HB_PORT[$name]=$port
        HB_URI[$name]="nbd://127.0.0.1:$port/"
    else
        HB_SOCK[$name]=$T/$name.sock
        listen=(-U "${HB_SOCK[$name]}")
        HB_URI[$name]="nbd+unix:///?socket=${HB_SOCK[$name]}"
    fi
    HB_LOG[$name]=$T/$name.log
    rm -f "$T/$name.pid" "${HB_SOCK[$name]:-}"   # nbdkit leaves its socket
    log "start $name: nbdkit ${listen[*]} ${opts[*]} hablock ${params[*]}"
    echo "=== start: ${listen[*]} ${opts[*]} ${params[*]}" >"${HB_LOG[$name]}"
    "${NBDKIT[@]}" "${listen[@]}" -f -P "$T/$name.pid" "${opts[@]}" \
        "$HABLOCK_PLUGIN" "${params[@]}" >>"${HB_LOG[$name]}" 2>&1 </dev/null &
    HB_PID[$name]=$!
    on_exit "stop_hablock $name"
    if [[ -n $ctl ]]; then   # a replicated node: a Secondary serves no client
        HB_CTL[$name]=$ctl
        wait_for 30 "node $name to answer on its control socket $ctl" _node_ready "$name"
    else
        wait_for 30 "server $name to answer on ${HB_URI[$name]}" _hablock_ready "$name"
    fi
}

_node_ready() {   # NAME
    local rc=0
    if ! _alive "${HB_PID[$1]}"; then
        wait "${HB_PID[$1]}" || rc=$?
        unset "HB_PID[$1]"
        fail "node $1 exited with status $rc during start: $(tail -n 5 "${HB_LOG[$1]}")"
    fi
    "$HACTL" --socket "${HB_CTL[$1]}" status >/dev/null 2>&1
}

# ---- two nodes --------------------------------------------------------------

HACTL=$HABLOCK_BUILDDIR/ctl/hactl
declare -A HB_CTL=()

# hactl_on NAME ARGS...: hactl against node NAME's control socket.
hactl_on() { local n=$1; shift; "$HACTL" --socket "${HB_CTL[$n]}" "$@"; }

# node_field NAME FIELD: one field of `hactl status --json` (dots for nesting).
node_field() {
    hactl_on "$1" status --json | /usr/bin/python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(str(v).lower() if isinstance(v, bool) else v)' "$2"
}

node_is() { [[ $(node_field "$1" "$2" 2>/dev/null) == "$3" ]]; }

# make_pair SIZE [TLSMODE]: two nodes alpha and bravo on 127.0.0.1, each with
# a SIZE-byte zero-filled disk $T/NODE.img, their control sockets in $T, and
# one configuration file $T/r0.conf for both. TLSMODE: cert (default), psk,
# off. Certificates come from tests/tls/mkcerts.sh into $T/tls.
make_pair() {
    local size=$1 mode=${2:-cert} pa pb
    mkdir -p "$T/tls"
    sh "$HABLOCK_SRCDIR/tests/tls/mkcerts.sh" "$T/tls" >/dev/null 2>&1 ||
        skip "cannot make test certificates (openssl)"
    truncate -s "$size" "$T/alpha.img" "$T/bravo.img"
    { read -r pa; read -r pb; } < <(_free_port 2)
    {
        printf '[resource]\nname = r0\nprotocol = C\ncontrol = %s/%%n.ctl\n' "$T"
        printf 'ping-interval = 500ms\nping-timeout = 2s\nconnect-timeout = 5s\n'
        case $mode in
            cert) printf '[tls]\nca = %s/tls/ca.crt\ncert = %s/tls/%%n.crt\nkey = %s/tls/%%n.key\n' "$T" "$T" "$T" ;;
            psk)  printf '[tls]\npsk = %s/tls/psk.hex\n' "$T" ;;
            off)  printf '[tls]\nmode = off\n' ;;
        esac
        printf '[node alpha]\ndisk = %s/alpha.img\naddress = 127.0.0.1:%s\n' "$T" "$pa"
        printf '[node bravo]\ndisk = %s/bravo.img\naddress = 127.0.0.1:%s\n' "$T" "$pb"
    } >"$T/r0.conf"
}

# start_pair [NBDKIT-ARGS...]: start both nodes of make_pair's configuration.
start_pair() {
    local n
    for n in alpha bravo; do
        start_hablock --ctl "$T/$n.ctl" "$n" config="$T/r0.conf" node="$n" "$@"
    done
}

# stop_hablock NAME: TERM, then KILL after a deadline. Fails if the server
# had died on its own, did not exit 0 on TERM, or its log has a sanitizer
# report. Safe to call twice.
stop_hablock() {
    local name=$1 pid=${HB_PID[$1]:-} rc=0 deadline
    [[ -n $pid ]] || return 0
    unset "HB_PID[$name]"
    if ! _alive "$pid"; then
        wait "$pid" || rc=$?
        fail "server $name (pid $pid) had exited by itself with status $rc"; return 1
    fi
    kill -TERM "$pid"
    deadline=$(( SECONDS + 20 ))
    while _alive "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
    if _alive "$pid"; then
        kill -KILL "$pid"
        wait "$pid" || true
        fail "server $name (pid $pid) ignored SIGTERM for 20s: killed"; return 1
    fi
    wait "$pid" || rc=$?
    if [[ $rc -ne 0 ]]; then
        fail "server $name exited with status $rc on SIGTERM"; return 1
    fi
    if grep -Eq 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error:' "${HB_LOG[$name]}"; then
        fail "sanitizer report in server $name's log ${HB_LOG[$name]}"; return 1
    fi
}

# hablock_backends: the io= backends this plugin was built with.
hablock_backends() {
    local dump list
    dump=$("${NBDKIT[@]}" "$HABLOCK_PLUGIN" --dump-plugin 2>&1) ||
        { fail "nbdkit $HABLOCK_PLUGIN --dump-plugin: $dump"; return 1; }
    list=$(sed -n 's/^hablock_io_backends=//p' <<<"$dump")
    [[ -n $list ]] || { fail "--dump-plugin has no hablock_io_backends= line"; return 1; }
    echo "$list"
}

# for_each_backend CMD...: run "CMD... IO CACHE" for io in sync uring aio
# hybrid and cache in none writeback. A backend not built in is reported, not run.
for_each_backend() {
    local built io cache
    built=$(hablock_backends)
    built=" $built "
    for io in sync uring aio hybrid; do
        if [[ $built != *" $io "* ]]; then
            log "note: plugin built without io=$io: not tested"
            continue
        fi
        for cache in none writeback; do
            log "== io=$io cache=$cache"
            "$@" "$io" "$cache"
        done
    done
}

# ---- more two-node helpers ---------------------------------------------------

# pair_port NODE: the TCP port of NODE's replication address in make_pair's
# configuration $T/r0.conf (alpha listens there; bravo connects to alpha's).
pair_port() {
    sed -n "/^\\[node $1\\]/,/^\\[/s/^address = .*:\\([0-9]*\\)\$/\\1/p" "$T/r0.conf"
}

# fake_peer_pair SIZE TLSMODE PING_TIMEOUT [REQUEST_TIMEOUT]: make_pair for
# alpha alone, whose peer is a test program posing as bravo (peerfuzz.py,
# badsecondary.py, rudepeer.py): pings every 200 ms, the timeouts given,
# and alpha's replication port in $pa, where the program connects.
fake_peer_pair() {
    local size=$1 mode=$2 ping=$3 req=${4:-} extra=''
    make_pair "$size" "$mode"
    [[ -z $req ]] || extra="\nrequest-timeout = $req"
    sed -i -e 's/^ping-interval = .*/ping-interval = 200ms/' \
        -e "s/^ping-timeout = .*/ping-timeout = $ping$extra/" "$T/r0.conf"
    grep -q "^ping-timeout = $ping\$" "$T/r0.conf" || fail "cannot set the timeouts in $T/r0.conf"
    [[ -z $req ]] || grep -q "^request-timeout = $req\$" "$T/r0.conf" ||
        fail "cannot set request-timeout in $T/r0.conf"
    pa=$(pair_port alpha)
    [[ -n $pa ]] || fail "no address for alpha in $T/r0.conf"
}

# log_mark NAME: remember how many lines server NAME's log has now;
# log_since NAME: print the lines it logged after the mark.
declare -A HB_LOGMARK=()
log_mark()  { HB_LOGMARK[$1]=$(wc -l <"${HB_LOG[$1]}"); }
log_since() { tail -n "+$(( ${HB_LOGMARK[$1]:-0} + 1 ))" "${HB_LOG[$1]}"; }

# ---- a server under a command prefix (added for t0230: network namespaces) --
# start_hablock_under PREFIX... -- START_HABLOCK-ARGS...: start_hablock with
# nbdkit run under PREFIX, e.g. `ip netns exec NS`. PREFIX must exec nbdkit
# in place (ip netns exec, env, nice do), so HB_PID stays nbdkit's own PID.
start_hablock_under() {
    local -a saved=("${NBDKIT[@]}") prefix=()
    while [[ $# -gt 0 && $1 != -- ]]; do prefix+=("$1"); shift; done
    [[ $# -gt 0 ]] || { fail "start_hablock_under: no -- after the prefix"; return 1; }
    shift
    NBDKIT=("${prefix[@]}" "${saved[@]}")
    start_hablock "$@"
    NBDKIT=("${saved[@]}")
}
