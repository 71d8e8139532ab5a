#!/usr/bin/env bash
# A replicated node with bad input stops at start with one error line naming
# the problem: parameters that conflict, a configuration file that is
# missing or wrong (the line names file:line and the key), a node the file
# does not have, TLS material that is missing, an address already in use, a
# control socket another node already serves.
set -euo pipefail
. "$(dirname "$0")/functions.sh"
requires nbdkit timeout truncate openssl

# bad_start ERE... -- PARAM...: starting fails with one error line matching
# every ERE.
bad_start() {
    local -a res=()
    while [[ $1 != -- ]]; do res+=("$1"); shift; done
    shift
    log "expect refusal: hablock $*"
    must_fail timeout -k 5 20 "${NBDKIT[@]}" -U - "$HABLOCK_PLUGIN" "$@" --run true
    assert_one_error_line "$T/must_fail.err" "${res[@]}"
}

make_pair $((8 << 20)) cert
conf=$T/r0.conf

bad_start 'disk=.*config=|conflict' -- config="$conf" node=alpha disk="$T/alpha.img"
bad_start 'node=.*config=' -- disk="$T/alpha.img" node=alpha
bad_start "$T/nothere\.conf" -- config="$T/nothere.conf" node=alpha
bad_start 'charlie' 'alpha|bravo' -- config="$conf" node=charlie

# A wrong key: the message names the file, the line and the key.
sed 's/^protocol = C$/protocol = C\nflavour = vanilla/' "$conf" >"$T/badkey.conf"
line=$(grep -n '^flavour' "$T/badkey.conf" | cut -d: -f1)
bad_start "badkey\.conf:$line" 'flavour' -- config="$T/badkey.conf" node=alpha

# An address without a port.
sed 's/^\(address = 127\.0\.0\.1\):[0-9]*$/\1/' "$conf" >"$T/noport.conf"
bad_start 'noport\.conf:[0-9]+' 'address' 'port' -- config="$T/noport.conf" node=alpha

# A cipher suite OpenSSL's TLS 1.3 does not have.
sed 's|^\[tls\]$|[tls]\nciphersuites = TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-SHA|' "$conf" >"$T/suites.conf"
line=$(grep -n '^ciphersuites' "$T/suites.conf" | cut -d: -f1)
bad_start "suites\.conf:$line" 'ciphersuites' "unknown TLS 1.3 cipher suite 'ECDHE-RSA-AES128-SHA'" \
    -- config="$T/suites.conf" node=alpha

# This node's certificate is missing.
mv "$T/tls/alpha.crt" "$T/tls/alpha.crt.away"
bad_start 'alpha\.crt' -- config="$conf" node=alpha
mv "$T/tls/alpha.crt.away" "$T/tls/alpha.crt"

# The node that listens (alpha) finds its address taken.
port=$(sed -n '/^\[node alpha\]/,/^\[/s/^address = 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$conf")
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
open(sys.argv[2], "w").close(); time.sleep(60)' "$port" "$T/squatter.ready" &
squatter=$!
on_exit "kill $squatter 2>/dev/null || true"
wait_for 10 "the squatter to hold port $port" test -e "$T/squatter.ready"
bad_start "127\.0\.0\.1:$port" 'in use' -- config="$conf" node=alpha
kill "$squatter"; wait "$squatter" 2>/dev/null || true

# A control socket that another live node serves.
start_hablock --ctl "$T/bravo.ctl" bravo config="$conf" node=bravo
bad_start 'bravo\.ctl' -- config="$conf" node=bravo
stop_hablock bravo
