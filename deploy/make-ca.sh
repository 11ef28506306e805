#!/usr/bin/env bash
# Create (or reuse) the consortium CA and issue a TLS server certificate whose SANs are the given names/IPs.
#
# The coordinating site runs this once for the SuperLink; the CA certificate (ca.crt, public) goes to every
# hospital, the CA key (ca.key) never leaves the coordinator. Keys are ECDSA P-384.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: $(basename "$0") [--out DIR] [--cert-name NAME] [--days N] [--ca-days N] [--org ORG] [--force] NAME_OR_IP...

Creates DIR/ca.crt + DIR/ca.key (only if absent: an existing CA is reused) and issues
DIR/NAME.crt + DIR/NAME.key, a server certificate whose subjectAltName lists every NAME_OR_IP
(DNS names and IPv4/IPv6 addresses). Include every address the SuperLink is reached at, plus
127.0.0.1 and localhost (the SuperLink connects back to itself), plus "superlink" for Docker.

  --out DIR         output directory (default: ./certs)
  --cert-name NAME  file name of the server certificate (default: superlink)
  --days N          server certificate validity in days (default: 825)
  --ca-days N       CA validity in days when a CA is created (default: 3650)
  --org ORG         organisation in the subject (default: CC-CMR Consortium)
  --force           replace an existing NAME.crt/NAME.key (the CA is never replaced)
  -h, --help        this help

Example: $(basename "$0") --out /etc/cccmr/certs superlink.cccmr.example.org 203.0.113.10 127.0.0.1 localhost
USAGE
}

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

out="./certs"; cert_name="superlink"; days=825; ca_days=3650; org="CC-CMR Consortium"; force=0
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
        --cert-name) [ $# -ge 2 ] || die "--cert-name needs a name"; cert_name="$2"; shift 2 ;;
        --days) [ $# -ge 2 ] || die "--days needs a number"; days="$2"; shift 2 ;;
        --ca-days) [ $# -ge 2 ] || die "--ca-days needs a number"; ca_days="$2"; shift 2 ;;
        --org) [ $# -ge 2 ] || die "--org needs a value"; org="$2"; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; names+=("$@"); break ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) names+=("$1"); shift ;;
    esac
done
[ ${#names[@]} -gt 0 ] || { usage >&2; die "give at least one hostname or IP address for the certificate"; }
case "$days$ca_days" in *[!0-9]*) die "--days and --ca-days take whole numbers of days" ;; esac
case "$cert_name" in ""|*/*|ca) die "--cert-name must be a plain file name other than 'ca'" ;; esac
command -v openssl >/dev/null || die "openssl not found on PATH"

# Run openssl quietly (it reports progress on stderr), but on failure show what it said and stop.
openssl_step() {
    local what="$1"; shift
    if ! openssl "$@" 2>"$tmp/openssl.err"; then
        echo "$(basename "$0"): error: openssl failed to $what (openssl $1):" >&2
        sed 's/^/    /' "$tmp/openssl.err" >&2
        exit 2
    fi
}

san=""
for n in "${names[@]}"; do
    if [[ "$n" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || [[ "$n" == *:* && "$n" =~ ^[0-9A-Fa-f:.]+$ ]]; then
        entry="IP:$n"
    elif [[ "$n" =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]; then
        entry="DNS:$n"
    else
        die "'$n' is neither a DNS name nor an IP address"
    fi
    san="${san:+$san,}$entry"
done

mkdir -p "$out"
umask 077
ca_crt="$out/ca.crt"; ca_key="$out/ca.key"
crt="$out/$cert_name.crt"; key="$out/$cert_name.key"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ -e "$ca_crt" ] || [ -e "$ca_key" ]; then
    [ -f "$ca_crt" ] && [ -f "$ca_key" ] || die "$out holds only one of ca.crt / ca.key: restore the other or remove both"
    echo "Reusing the CA in $ca_crt" >&2
else
    # Made in the temporary folder and moved in together: a failed step leaves no half CA behind.
    openssl_step "create the CA key" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/ca.key"
    openssl_step "create the CA certificate" req -x509 -new -key "$tmp/ca.key" -sha384 -days "$ca_days" \
        -subj "/O=$org/CN=$org Root CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" -out "$tmp/ca.crt"
    chmod 600 "$tmp/ca.key"; chmod 644 "$tmp/ca.crt"
    mv -f "$tmp/ca.key" "$ca_key"
    mv -f "$tmp/ca.crt" "$ca_crt"
    echo "Created the consortium CA: $ca_crt (share it) and $ca_key (keep it secret, offline if possible)" >&2
fi

if { [ -e "$crt" ] || [ -e "$key" ]; } && [ "$force" -ne 1 ]; then
    die "$crt or $key exists already: pass --force to replace it"
fi

cat >"$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl_step "create the $cert_name key" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$tmp/key.pem"
openssl_step "create the $cert_name certificate request" req -new -key "$tmp/key.pem" -subj "/O=$org/CN=${names[0]}" \
    -out "$tmp/req.csr"
openssl_step "sign the $cert_name certificate with $ca_key" x509 -req -in "$tmp/req.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -sha384 -days "$days" -extfile "$tmp/ext.cnf" -out "$tmp/crt.pem"
mv -f "$tmp/key.pem" "$key"
mv -f "$tmp/crt.pem" "$crt"
chmod 600 "$key"; chmod 644 "$crt"
echo "Issued $crt (SAN: $san), valid $days days; key $key" >&2
