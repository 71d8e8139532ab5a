#!/bin/sh
# Make the TLS material the tests use, with the openssl CLI, into DIR:
#   ca.crt ca.key                  the cluster CA
#   alpha.crt alpha.key            node alpha (SAN DNS:alpha), signed by ca
#   bravo.crt bravo.key            node bravo (SAN DNS:bravo), signed by ca
#   alpha-expired.crt              alpha's key, expired in 2020, signed by ca
#   other-ca.crt other-ca.key      an unrelated CA
#   alpha-other.crt alpha-other.key  "alpha", signed by the unrelated CA
#   charlie.crt charlie.key        a wrong name (SAN DNS:charlie), signed by ca
#   cn-only.crt cn-only.key        CN=alpha and no SAN, signed by ca
#   psk.hex psk-other.hex          two 32-byte PSKs in hex (mode 0600)
# EC P-256 keys: the whole set takes well under a second.
# Usage: mkcerts.sh DIR      (exit 77 when openssl is missing)
set -eu

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
  echo "$0: openssl CLI not found" >&2
  exit 77
fi

dir=$1
mkdir -p "$dir"
cd "$dir"
umask 077

newkey() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$1.key" 2>/dev/null
}

# A self-signed CA: name, subject.
mkca() {
  newkey "$1"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -subj "/CN=$2" \
    -days 3650 -sha256 \
    -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

# "openssl ca" signs with explicit dates (x509 -days cannot go back in
# time everywhere). Its bookkeeping lives in .ca-NAME/.
cadb() {
  mkdir -p ".ca-$1"
  : > ".ca-$1/index.txt"
  [ -f ".ca-$1/serial" ] || echo 1000 > ".ca-$1/serial"
  cat > ".ca-$1/ca.cnf" <<EOF
[ ca ]
default_ca = hbca
[ hbca ]
database = .ca-$1/index.txt
new_certs_dir = .ca-$1
serial = .ca-$1/serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
x509_extensions = leaf
[ anything ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
}

# Sign a leaf: out-name, key-name, CN, SAN DNS name ("" for none), CA,
# start date, end date.
mkleaf() {
  out=$1 key=$2 cn=$3 san=$4 ca=$5 start=$6 end=$7
  cnf=".ca-$ca/ca.cnf"
  ext=leaf
  if [ -n "$san" ]; then
    ext=leaf_$out
    printf '[ %s ]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth,clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\nsubjectAltName = DNS:%s\n' \
      "$ext" "$san" >> "$cnf"
  fi
  openssl req -new -key "$key.key" -subj "/CN=$cn" -out ".ca-$ca/$out.csr" \
    2>/dev/null
  openssl ca -batch -config "$cnf" -cert "$ca.crt" -keyfile "$ca.key" \
    -extensions "$ext" -startdate "$start" -enddate "$end" -notext \
    -in ".ca-$ca/$out.csr" -out "$out.crt" 2>/dev/null
}

now_start=20200101000000Z
long_end=20991231235959Z

mkca ca hablock-test-ca
mkca other-ca other-test-ca
cadb ca
cadb other-ca

for n in alpha bravo charlie cn-only alpha-other; do
  newkey "$n"
done

mkleaf alpha alpha alpha alpha ca "$now_start" "$long_end"
mkleaf bravo bravo bravo bravo ca "$now_start" "$long_end"
mkleaf charlie charlie charlie charlie ca "$now_start" "$long_end"
mkleaf cn-only cn-only alpha "" ca "$now_start" "$long_end"
mkleaf alpha-expired alpha alpha alpha ca 20200101000000Z 20200102000000Z
mkleaf alpha-other alpha-other alpha alpha other-ca "$now_start" "$long_end"

openssl rand -hex 32 > psk.hex
openssl rand -hex 32 > psk-other.hex
chmod 600 psk.hex psk-other.hex
chmod 644 ./*.crt
rm -rf .ca-ca .ca-other-ca
