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

# Fail unless a private key exists; warn when other users may read it.
cccmr_check_private_key() {
    local key="$1"
    [ -r "$key" ] || { echo "error: private key $key not found or not readable" >&2; return 2; }
    local mode
    mode="$(stat -c %a "$key" 2>/dev/null || echo 600)"
    case "$mode" in
        *[1-7]) echo "warning: $key is readable by other users (mode $mode): run chmod 600 $key" >&2 ;;
    esac
}
