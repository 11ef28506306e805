#!/usr/bin/env bash
# Create a hospital's SuperNode authentication key pair (ECDSA P-384, OpenSSH format).
#
# The private key stays at the hospital (mode 600); the public key (SITE.pub) is sent to the coordinating
# site, which registers it with deploy/register-site.sh. Only registered keys may join the federation.
set -euo pipefail

usage() {
    cat <<USAGE
Usage: $(basename "$0") [--out DIR] SITE

Writes DIR/SITE (private key, mode 600) and DIR/SITE.pub (public key to send to the coordinator).
SITE is the site name used in the node config (letters, digits, '-' and '_').

  --out DIR   output directory (default: ./keys)
  -h, --help  this help
USAGE
}

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

out="./keys"; site=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) [ -z "$site" ] || die "give exactly one SITE"; site="$1"; shift ;;
    esac
done
[ -n "$site" ] || { usage >&2; die "give the SITE name"; }
[[ "$site" =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]] || die "site name '$site' may hold only letters, digits, '-' and '_'"
command -v ssh-keygen >/dev/null || die "ssh-keygen not found on PATH (install openssh-client)"

mkdir -p "$out"
chmod 700 "$out"
key="$out/$site"
[ ! -e "$key" ] && [ ! -e "$key.pub" ] || die "$key or $key.pub exists already: keep it, or remove both to make a new pair (and re-register)"
ssh-keygen -q -t ecdsa -b 384 -N "" -C "cccmr-supernode-$site" -f "$key"
chmod 600 "$key"; chmod 644 "$key.pub"
echo "Created $key (private: stays here, mode 600) and $key.pub (send to the coordinating site)" >&2
