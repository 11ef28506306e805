#!/usr/bin/env bash
# Start a hospital's CC-CMR SuperNode: TLS (verifying the consortium CA) and key authentication by default.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=flwr-env.sh
. "$here/flwr-env.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") --superlink HOST:PORT --site NAME --data-path DIR --cache-path DIR [options] [-- EXTRA...]

Starts flower-supernode for one hospital. It connects out to the SuperLink over TLS, checks the SuperLink's
certificate against the consortium CA, and authenticates with the site's private key (make-site-keys.sh),
whose public key the coordinator has registered (register-site.sh). Nothing listens on the network except
the local Runtime API (--host, default 127.0.0.1).

  --superlink HOST:PORT  the coordinator's SuperLink (required)
  --site NAME            site name, as registered (required)
  --data-path DIR        the site's DICOM data (required)
  --cache-path DIR       the site's preprocessed cache and local checkpoints (required)
  --device DEV           cpu, cuda or cuda:N (default: cpu)
  --allow-outside-paths  let manifest.csv name series outside --data-path (absolute or ../ paths; refused otherwise)
  --worker-socket PATH   forward each message to the warm site worker (cccmr site-worker) listening on this
                         absolute UNIX socket path, e.g. /run/cccmr/NAME/worker.sock (empty: train in the ClientApp)
  --root-cert FILE       consortium CA certificate (default: \$CCCMR_CERTS/ca.crt or ./certs/ca.crt)
  --key FILE             the site's private key (default: ./keys/NAME)
  --port PORT            local Runtime API port, unique per SuperNode on this host (default: 9094)
  --host HOST            local Runtime API address (default: 127.0.0.1; 0.0.0.0 in Docker)
  --state-dir DIR        FLWR_HOME of this SuperNode (default: \$CCCMR_STATE_DIR or ./supernode-state/NAME)
  --isolation MODE       subprocess (default) or process (Docker: a separate flower-superexec runs ClientApps)
  --log-file FILE        append all output to FILE instead of stderr
  --insecure             NO TLS and NO authentication: local tests only; --superlink and --host must be
                         loopback addresses (loud warning)
  --print-command        print the flower-supernode command line and exit without starting it
  -h, --help             this help

Environment: FLOWER_SUPERNODE (path of flower-supernode). The offline variables FLWR_TELEMETRY_ENABLED=0,
FLWR_DISABLE_UPDATE_CHECK=1 and FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 are always set.
USAGE
}

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

superlink=""; site=""; data_path=""; cache_path=""; device="cpu"; root_cert=""; key=""
port=9094; host="127.0.0.1"; state_dir="${CCCMR_STATE_DIR:-}"; isolation="subprocess"; log_file=""
worker_socket=""; insecure=0; print_only=0; outside=0; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --superlink|--site|--data-path|--cache-path|--device|--root-cert|--key|--port|--host|--state-dir|--isolation|--log-file|\
        --worker-socket)
            [ $# -ge 2 ] || die "$1 needs a value"
            case "$1" in
                --superlink) superlink="$2" ;; --site) site="$2" ;; --data-path) data_path="$2" ;;
                --cache-path) cache_path="$2" ;; --device) device="$2" ;; --root-cert) root_cert="$2" ;;
                --key) key="$2" ;; --port) port="$2" ;; --host) host="$2" ;; --state-dir) state_dir="$2" ;;
                --isolation) isolation="$2" ;; --log-file) log_file="$2" ;; --worker-socket) worker_socket="$2" ;;
            esac
            shift 2 ;;
        --insecure) insecure=1; shift ;;
        --allow-outside-paths) outside=1; shift ;;
        --print-command) print_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown argument $1" ;;
    esac
done
[ -n "$superlink" ] || die "--superlink HOST:PORT is required"
[[ "$superlink" == *:* ]] || die "--superlink must be HOST:PORT, got '$superlink'"
[ -n "$site" ] || die "--site NAME is required"
[[ "$site" =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]] || die "site name '$site' may hold only letters, digits, '-' and '_'"
[ -n "$data_path" ] || die "--data-path DIR is required"
[ -n "$cache_path" ] || die "--cache-path DIR is required"
[[ "$device" =~ ^(cpu|cuda(:[0-9]+)?)$ ]] || die "--device must be cpu, cuda or cuda:N, got '$device'"
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port must be 1-65535, got '$port'"
case "$isolation" in subprocess|process) ;; *) die "--isolation must be subprocess or process, got '$isolation'" ;; esac
for v in "$data_path" "$cache_path" "$worker_socket"; do
    case "$v" in *'"'*|*' '*) die "paths in the node config may not contain quotes or spaces: '$v'" ;; esac
done
if [ -n "$worker_socket" ]; then
    [[ "$worker_socket" == /* ]] || die "--worker-socket must be an absolute path, got '$worker_socket'"
    [ "$(printf %s "$worker_socket" | wc -c)" -le 107 ] || die "--worker-socket is longer than 107 bytes (a UNIX socket path)"
fi
for a in ${extra[@]+"${extra[@]}"}; do
    case "$a" in --insecure|--root-certificates|--auth-supernode-*|--node-config) die "pass $a through this script's own options" ;; esac
done
if [ "$insecure" -eq 1 ]; then  # unencrypted, unauthenticated: never across a network, in either direction
    cccmr_is_loopback "${superlink%:*}" \
        || die "--insecure connects to a SuperLink on loopback only (127.0.0.1, ::1 or localhost), not '$superlink'"
    cccmr_is_loopback "$host" || die "--insecure serves its Runtime API on loopback only, not on '$host'"
fi

state_dir="${state_dir:-./supernode-state/$site}"
mkdir -p "$state_dir"
state_dir="$(cd "$state_dir" && pwd)"
cccmr_flwr_env "$state_dir"
exe="$(cccmr_find_exe flower-supernode "${FLOWER_SUPERNODE:-}")" || exit 2

node_config="site=\"$site\" data-path=\"$data_path\" cache-path=\"$cache_path\" device=\"$device\""
[ "$outside" -eq 0 ] || node_config+=" allow-outside-paths=true"
[ -z "$worker_socket" ] || node_config+=" worker-socket=\"$worker_socket\""
cmd=("$exe" --superlink "$superlink" --host "$host" --port "$port" --isolation "$isolation" --node-config "$node_config")
if [ "$insecure" -eq 1 ]; then
    cccmr_insecure_banner "flower-supernode ($site)"
    cmd+=(--insecure)
else
    root_cert="${root_cert:-${CCCMR_CERTS:-./certs}/ca.crt}"
    key="${key:-./keys/$site}"
    cccmr_check_cert "$root_cert" || exit 2
    cccmr_check_private_key "$key" || exit 2
    cmd+=(--root-certificates "$root_cert" --auth-supernode-private-key "$key")
fi
cmd+=(${extra[@]+"${extra[@]}"})

if [ "$print_only" -eq 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
[ -d "$data_path" ] || echo "warning: data path $data_path does not exist on this host" >&2
mkdir -p "$cache_path"
if [ -n "$log_file" ]; then
    mkdir -p "$(dirname "$log_file")"
    exec >>"$log_file" 2>&1
fi
echo "Starting SuperNode '$site' -> $superlink (FLWR_HOME: $FLWR_HOME, device: $device)" >&2
if [ -n "$worker_socket" ]; then
    # Not an error: the SuperNode does not need the worker to connect; a round fails at this site until it runs.
    [ -S "$worker_socket" ] || echo "note: no site worker listens at $worker_socket yet (still starting?):" \
        "this site answers rounds with an error until cccmr site-worker runs there" >&2
    echo "Forwarding messages to the site worker at $worker_socket" >&2
fi
exec "${cmd[@]}"
