#!/usr/bin/env bash
# Start the CC-CMR SuperLink (coordinating site): TLS and SuperNode authentication are on by default.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=flwr-env.sh
. "$here/flwr-env.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options] [-- EXTRA_FLOWER_SUPERLINK_ARGS...]

Starts flower-superlink with TLS (certificates from make-ca.sh) and SuperNode authentication
(only SuperNodes whose public key was registered with register-site.sh may join).

  --certs DIR        directory with ca.crt, superlink.crt, superlink.key (default: \$CCCMR_CERTS or ./certs)
  --host HOST        address to listen on (default: 0.0.0.0; with --insecure 127.0.0.1, and only a loopback
                     address is accepted: 127.x.x.x, ::1 or localhost)
  --port PORT        the SuperLink's one HTTP(S) port for Fleet, Control and Runtime APIs (default: 8000)
  --state-dir DIR    state database, log file and FLWR_HOME (default: \$CCCMR_STATE_DIR or ./superlink-state)
  --state MODE       file (default): runs, registered sites and messages in STATE_DIR/state.db (SQLite),
                     kept across restarts; memory: all in memory, about twice as fast a round at the
                     default model size (every message's arrays pass through this store), but a restart
                     forgets registered sites: give --sites-dir, and they are registered at every start
  --sites-dir DIR    with --state memory: the sites' public keys (SITE.pub, as sent by each hospital);
                     each is registered under its file name once the SuperLink listens
  --isolation MODE   subprocess (default: ServerApps run as child processes) or process (Docker: a
                     separate flower-superexec runs them)
  --superexec-secret FILE  shared secret for flower-superexec in process isolation (optional; mode 600 or 400)
  --insecure         NO TLS and NO SuperNode authentication: local tests only, on a loopback
                     address (loud warning)
  --print-command    print the flower-superlink command line and exit without starting it
  -h, --help         this help

Environment: FLWR_HOME (default STATE_DIR/flwr-home); FLOWER_SUPERLINK (path of flower-superlink).
The offline variables FLWR_TELEMETRY_ENABLED=0, FLWR_DISABLE_UPDATE_CHECK=1 and
FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 are always set.
USAGE
}

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

certs="${CCCMR_CERTS:-./certs}"; host=""; port=8000
state_dir="${CCCMR_STATE_DIR:-./superlink-state}"; isolation="subprocess"; secret=""; state="file"; sites_dir=""
insecure=0; print_only=0; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --certs) [ $# -ge 2 ] || die "--certs needs a directory"; certs="$2"; shift 2 ;;
        --host) [ $# -ge 2 ] || die "--host needs an address"; host="$2"; shift 2 ;;
        --port) [ $# -ge 2 ] || die "--port needs a number"; port="$2"; shift 2 ;;
        --state-dir) [ $# -ge 2 ] || die "--state-dir needs a directory"; state_dir="$2"; shift 2 ;;
        --isolation) [ $# -ge 2 ] || die "--isolation needs subprocess or process"; isolation="$2"; shift 2 ;;
        --state) [ $# -ge 2 ] || die "--state needs file or memory"; state="$2"; shift 2 ;;
        --sites-dir) [ $# -ge 2 ] || die "--sites-dir needs a directory"; sites_dir="$2"; shift 2 ;;
        --superexec-secret) [ $# -ge 2 ] || die "--superexec-secret needs a file"; secret="$2"; shift 2 ;;
        --insecure) insecure=1; shift ;;
        --print-command) print_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) usage >&2; die "unknown argument $1" ;;
    esac
done
if [ "$insecure" -eq 1 ]; then
    # Insecure means loopback only: plain HTTP and no authentication must never be reachable from the network.
    host="${host:-127.0.0.1}"
    cccmr_is_loopback "$host" || die "--insecure listens on loopback only (127.0.0.1, ::1 or localhost), not on '$host'"
else
    host="${host:-0.0.0.0}"
fi
[[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "--port must be 1-65535, got '$port'"
case "$isolation" in subprocess|process) ;; *) die "--isolation must be subprocess or process, got '$isolation'" ;; esac
case "$state" in file|memory) ;; *) die "--state must be file or memory, got '$state'" ;; esac
register_at_start=0
if [ "$state" = memory ] && [ "$insecure" -eq 0 ]; then
    [ -n "$sites_dir" ] || die "--state memory needs --sites-dir DIR with every site's SITE.pub (a restart forgets registrations)"
    compgen -G "$sites_dir/*.pub" >/dev/null || die "--sites-dir $sites_dir holds no SITE.pub public key"
    sites_dir="$(cd "$sites_dir" && pwd)"
    register_at_start=1
fi
for a in ${extra[@]+"${extra[@]}"}; do
    case "$a" in
        --insecure|--ssl-*|--host|--host=*|--port|--port=*|--fleet-api-address*|--control-api-address*)
            die "pass $a through this script's own options, not after --" ;;
    esac
done

mkdir -p "$state_dir/logs"
state_dir="$(cd "$state_dir" && pwd)"
[ ! -d "$certs" ] || certs="$(cd "$certs" && pwd)"
cccmr_flwr_env "$state_dir"
exe="$(cccmr_find_exe flower-superlink "${FLOWER_SUPERLINK:-}")" || exit 2

database="$state_dir/state.db"
[ "$state" = file ] || database=":flwr-in-memory:"
cmd=("$exe" --host "$host" --port "$port" --database "$database" --isolation "$isolation"
     --log-file "$state_dir/logs/superlink.log" --disable-runtime-dependency-installation)
if [ "$insecure" -eq 1 ]; then
    cccmr_insecure_banner "flower-superlink"
    cmd+=(--insecure)
else
    for f in ca.crt superlink.crt; do cccmr_check_cert "$certs/$f" || exit 2; done
    cccmr_check_private_key "$certs/superlink.key" || exit 2
    cmd+=(--ssl-ca-certfile "$certs/ca.crt" --ssl-certfile "$certs/superlink.crt" --ssl-keyfile "$certs/superlink.key"
          --enable-supernode-auth)
fi
if [ -n "$secret" ]; then
    cccmr_check_private_key "$secret" "SuperExec secret" || exit 2
    cmd+=(--superexec-auth-secret-file "$secret")
fi
cmd+=(${extra[@]+"${extra[@]}"})

if [ "$print_only" -eq 1 ]; then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
echo "Starting SuperLink on $host:$port (state: $state in $state_dir, FLWR_HOME: $FLWR_HOME, log: $state_dir/logs/superlink.log)" >&2
[ "$register_at_start" -eq 1 ] || exec "${cmd[@]}"

# In-memory state: start the SuperLink, register every site's key once it listens, then stay its parent
# (SIGTERM/SIGINT are passed on; the exit status is the SuperLink's).
"${cmd[@]}" &
link_pid=$!
trap 'kill -TERM "$link_pid" 2>/dev/null || true' TERM INT
connect_host="$host"
[ "$host" != "0.0.0.0" ] || connect_host="127.0.0.1"
for _ in $(seq 1 240); do
    kill -0 "$link_pid" 2>/dev/null || break
    (exec 3<>"/dev/tcp/$connect_host/$port") 2>/dev/null && break
    sleep 0.5
done
for pub in "$sites_dir"/*.pub; do
    site="$(basename "$pub" .pub)"
    for attempt in 1 2 3; do
        kill -0 "$link_pid" 2>/dev/null || break 2
        if bash "$here/register-site.sh" --superlink "$connect_host:$port" --root-cert "$certs/ca.crt" "$site" "$pub" >&2; then
            break
        fi
        [ "$attempt" -lt 3 ] && sleep 2 || echo "warning: could not register site '$site' ($pub)" >&2
    done
done
rc=0
wait "$link_pid" || rc=$?
while kill -0 "$link_pid" 2>/dev/null; do wait "$link_pid" || rc=$?; done  # a signal interrupted the first wait
exit "$rc"
