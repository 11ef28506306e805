#!/usr/bin/env bash
# Register a hospital's SuperNode public key with the SuperLink (run at the coordinating site).
#
# A SuperLink started by start-superlink.sh refuses every SuperNode whose key is not registered.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=flwr-env.sh
. "$here/flwr-env.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [--superlink HOST:PORT --root-cert FILE | --connection NAME] [--insecure] SITE PUBLIC_KEY

Registers PUBLIC_KEY (SITE.pub from make-site-keys.sh, received from the hospital by a trusted channel;
compare its fingerprint by phone: ssh-keygen -lf SITE.pub) under the name SITE.

  --superlink HOST:PORT  the SuperLink to register with (default: 127.0.0.1:8000)
  --root-cert FILE       consortium CA certificate (default: \$CCCMR_CERTS/ca.crt or ./certs/ca.crt)
  --connection NAME      use the connection NAME from \$FLWR_HOME/config.toml instead of the two above
  --insecure             talk to a SuperLink started with --insecure (local tests only)
  --print-command        print the flwr command line and exit
  -h, --help             this help

Afterwards \`flwr supernode list\` shows the registered SuperNodes; \`flwr supernode unregister NODE_ID\`
removes one (revokes the site).
USAGE
}

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

superlink="127.0.0.1:8000"; root_cert=""; connection=""; insecure=0; print_only=0; pos=()
while [ $# -gt 0 ]; do
    case "$1" in
        --superlink) [ $# -ge 2 ] || die "--superlink needs HOST:PORT"; superlink="$2"; shift 2 ;;
        --root-cert) [ $# -ge 2 ] || die "--root-cert needs a file"; root_cert="$2"; shift 2 ;;
        --connection) [ $# -ge 2 ] || die "--connection needs a name"; connection="$2"; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --print-command) print_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *) pos+=("$1"); shift ;;
    esac
done
[ ${#pos[@]} -eq 2 ] || { usage >&2; die "give SITE and PUBLIC_KEY"; }
site="${pos[0]}"; pub="${pos[1]}"
[[ "$site" =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]] || die "site name '$site' may hold only letters, digits, '-' and '_'"
[ -r "$pub" ] || die "public key $pub not found"
grep -q '^ecdsa-sha2-nistp384 ' "$pub" || die "$pub is not an ECDSA P-384 OpenSSH public key (make it with make-site-keys.sh)"

exe="$(cccmr_find_exe flwr "${FLWR_CLI:-}")" || exit 2
tmp_home=""
if [ -n "$connection" ]; then
    cccmr_flwr_env "${CCCMR_STATE_DIR:-.}"
else
    # A throw-away FLWR_HOME holding just this one connection: the operator's config.toml is left alone.
    tmp_home="$(mktemp -d)"
    trap 'rm -rf "$tmp_home"' EXIT
    export FLWR_HOME="$tmp_home"
    cccmr_flwr_env "$tmp_home"
    connection="cccmr-register"
    {
        echo "[superlink]"
        echo "default = \"$connection\""
        echo "[superlink.$connection]"
        echo "address = \"$superlink\""
        if [ "$insecure" -eq 1 ]; then
            echo "insecure = true"
        else
            root_cert="${root_cert:-${CCCMR_CERTS:-./certs}/ca.crt}"
            cccmr_check_cert "$root_cert" || exit 2
            echo "root-certificates = \"$(cd "$(dirname "$root_cert")" && pwd)/$(basename "$root_cert")\""
        fi
    } >"$FLWR_HOME/config.toml"
fi
[ "$insecure" -eq 0 ] || cccmr_insecure_banner "register-site"

cmd=("$exe" supernode register "$pub" "$connection" --name "$site")
if [ "$print_only" -eq 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
echo "Registering site '$site' key $(ssh-keygen -lf "$pub" 2>/dev/null | awk '{print $2}') with $superlink" >&2
"${cmd[@]}"
