#!/usr/bin/env bash
# The peer's address answers nothing: a listener on loopback whose accept
# queue is full, so the kernel drops our SYNs (as a dead host or a firewall
# that drops packets would). bravo, the node that connects, must give up
# each attempt after connect-timeout, say so in its status, and stop
# promptly on SIGTERM: a blocking connect(2) would hold its connector for
# the kernel's SYN retries (about two minutes), and the node's stop with it.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit ss /usr/bin/python3
[[ -x $HACTL ]] || skip "hactl not built"

connect_timeout_ms=1500
make_pair $((16 << 20)) cert
pa=$(pair_port alpha)
[[ -n $pa ]] || fail "no address for alpha in $T/r0.conf"
sed -i "s/^connect-timeout = .*/connect-timeout = ${connect_timeout_ms}ms/" "$T/r0.conf"
grep -q "^connect-timeout = ${connect_timeout_ms}ms\$" "$T/r0.conf" || fail "could not set connect-timeout"

# The black hole on alpha's port: listen(0), then fill the queue with
# connections nobody accepts; READY once a further connect no longer
# completes. Runs until killed.
cat >"$T/blackhole.py" <<'PY'
import socket, sys, time
port, ready = int(sys.argv[1]), sys.argv[2]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(0)
held = []
for _ in range(16):
    c = socket.socket()
    c.settimeout(0.5)
    try:
        c.connect(("127.0.0.1", port))
        held.append(c)
    except (socket.timeout, OSError):
        c.close()
        open(ready, "w").close()
        break
else:
    sys.exit("the accept queue never filled")
while True:
    time.sleep(1)
PY
timeout 120 /usr/bin/python3 "$T/blackhole.py" "$pa" "$T/ready" &
hole=$!
on_exit "kill $hole 2>/dev/null || true"
wait_for 10 "the black hole on port $pa to fill its queue" test -e "$T/ready"

start_hablock --ctl "$T/bravo.ctl" bravo config="$T/r0.conf" node=bravo
_timed_out() { node_field bravo last_error | grep -q "connect to 127.0.0.1:$pa: no answer within $connect_timeout_ms ms (connect-timeout)"; }
t0=$(date +%s%3N)
wait_for 10 "bravo to give up a connect after connect-timeout" _timed_out
log "bravo: $(node_field bravo last_error) (after $(( $(date +%s%3N) - t0 )) ms)"
assert_eq "$(node_field bravo connection)" Connecting "bravo's connection"

# Stop while a connect is in progress: the next attempt starts within the
# backoff (at most 5 s); wait until it has, then SIGTERM must end bravo
# within a second or two (stop_hablock fails after 20 s).
bravo_in_connect() { [[ -n $(ss -Htn state syn-sent "dport = :$pa" 2>/dev/null) ]]; }
wait_for 10 "bravo to be in a connect again" bravo_in_connect
t0=$(date +%s%3N)
stop_hablock bravo
ms=$(( $(date +%s%3N) - t0 ))
log "bravo stopped $ms ms after SIGTERM, in the middle of a connect"
(( ms < 3000 )) || fail "bravo took $ms ms to stop while connecting to a dead address"
