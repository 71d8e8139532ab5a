#!/usr/bin/env bash
# Anyone who reaches the replication port can make a node refuse a
# connection, so those refusals must not flood its log: 300 connections
# sending an HTTP request in clear, as fast as alpha drops them. alpha logs
# at most 20 refusals per 10 s, keeps serving `hactl status` (whose
# last_error names the latest refusal), and, once the window has passed,
# the next refusal says how many were not logged.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"

make_pair $((16 << 20)) cert
pa=$(pair_port alpha)
[[ -n $pa ]] || fail "no address for alpha in $T/r0.conf"
start_hablock --ctl "$T/alpha.ctl" alpha config="$T/r0.conf" node=alpha

# flood.py PORT COUNT: COUNT connections one after the other, each sending
# an HTTP request and waiting until alpha drops it (at most 5 s each).
cat >"$T/flood.py" <<'PY'
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    try:
        while s.recv(4096):
            pass
    except (ConnectionError, socket.timeout):
        pass
    s.close()
PY

log_mark alpha
timeout 120 /usr/bin/python3 "$T/flood.py" "$pa" 300 || fail "the flood of bad connections failed"
n=$(log_since alpha | grep -c 'not TLS' || true)
log "300 refused connections, $n logged"
(( n >= 1 && n <= 20 )) || fail "alpha logged $n lines for 300 refused connections (want 1..20)"
assert_grep 'not TLS' <(node_field alpha last_error) "alpha's last_error after the flood"
node_is alpha connection Connecting || fail "alpha is not waiting for its peer after the flood"

# Past the 10 s window, the next refusal is logged with the count of those
# that were not: one more bad connection every half second until it shows.
_suppressed_logged() {
    timeout 10 /usr/bin/python3 "$T/flood.py" "$pa" 1
    log_since alpha | grep -Eq 'not TLS.*\(and [0-9]+ more refused connections not logged\)'
}
wait_for 20 "alpha to log how many refusals it did not log" _suppressed_logged
line=$(log_since alpha | grep -E -m1 'more refused connections not logged')
log "alpha: ${line#nbdkit: }"
m=$(sed -E 's/.*\(and ([0-9]+) more.*/\1/' <<<"$line")
(( m >= 300 - 20 )) || fail "alpha says $m refusals were not logged (want at least 280)"
stop_hablock alpha
