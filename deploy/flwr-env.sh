# Offline environment for every Flower process of CC-CMR (source it: `. deploy/flwr-env.sh STATE_DIR`).
#
# Hospitals and the coordinator run offline: without these, flwr calls Flower's servers (telemetry, update
# check) and the SuperLink runs `uv sync` on the app's dependencies for every run.
# Sourced by start-superlink.sh, start-supernode.sh and register-site.sh; safe to source by hand before using
# the `flwr` CLI. FLWR_HOME is kept when already set, else it becomes STATE_DIR/flwr-home.
cccmr_flwr_env() {
    local state_dir="${1:-.}"
    export FLWR_HOME="${FLWR_HOME:-$state_dir/flwr-home}"
    export FLWR_TELEMETRY_ENABLED=0
    export FLWR_DISABLE_UPDATE_CHECK=1
    export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
    export RAY_USAGE_STATS_ENABLED=0
    # The SuperExec that starts each ServerApp/ClientApp process polls for work every 1 s by default: 0.2 s
    # starts a round's ClientApp sooner at the cost of a few cheap local requests.
    export FLWR_SUPEREXEC_TASK_POLL_INTERVAL="${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.2}"
    mkdir -p "$FLWR_HOME"
}

# A warning nobody can miss, on stderr (journald / docker logs capture it).
cccmr_insecure_banner() {
    local what="$1"
    {
        echo "################################################################################"
        echo "# WARNING: $what started with --insecure"
        echo "# NO TLS: model updates and metrics travel UNENCRYPTED; NO SuperNode authentication:"
        echo "# ANY machine that reaches this port can join. For local tests on 127.0.0.1 ONLY."
        echo "# Never use --insecure with real hospital data or across a network."
        echo "################################################################################"
    } >&2
}

# True for a loopback address: 127.0.0.0/8, ::1 (bare or in brackets) or localhost.
cccmr_is_loopback() {
    case "$1" in
        localhost|::1|"[::1]") return 0 ;;
        *) [[ "$1" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] ;;
    esac
}

# Find a Flower executable: the variable named in $2 when set (tests, venvs), else PATH.
cccmr_find_exe() {
    local name="$1" override="${2:-}"
    if [ -n "$override" ]; then
        echo "$override"
    elif command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
    else
        echo "error: $name not found on PATH (activate the project's Python environment)" >&2
        return 2
    fi
}

# Fail unless a certificate file exists and is not expired (when openssl is available).
cccmr_check_cert() {
    local cert="$1"
    [ -r "$cert" ] || { echo "error: certificate $cert not found or not readable" >&2; return 2; }
    if command -v openssl >/dev/null 2>&1; then
        openssl x509 -in "$cert" -noout >/dev/null 2>&1 || { echo "error: $cert is not a PEM certificate" >&2; return 2; }
        openssl x509 -in "$cert" -noout -checkend 0 >/dev/null 2>&1 || {
            echo "error: certificate $cert has expired: issue a new one with deploy/make-ca.sh --force" >&2
            return 2
        }
    fi
}

# Fail unless a private key (or, with a second argument naming it, another secret file) exists and its mode
# has no group or other bits (600 or 400), the rule of `cccmr doctor`: a key the group may read (640) is
# refused like a world-readable one.
cccmr_check_private_key() {
    local key="$1" what="${2:-private key}"
    [ -r "$key" ] || { echo "error: $what $key not found or not readable" >&2; return 2; }
    local mode
    mode="$(stat -c %a "$key" 2>/dev/null || stat -f %Lp "$key" 2>/dev/null)" || mode=""
    [[ "$mode" =~ ^[0-7]+$ ]] || { echo "error: cannot read the permissions of $what $key" >&2; return 2; }
    if (( 8#$mode & 8#077 )); then
        echo "error: $what $key is accessible to other users (mode $mode): run chmod 600 $key" >&2
        return 2
    fi
}
