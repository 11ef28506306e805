"""start-superlink.sh, start-supernode.sh, register-site.sh: TLS and authentication unless --insecure, offline env."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

OFFLINE = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


@pytest.fixture
def fake_flower(tmp_path: Path) -> Path:
    """A stand-in for flower-superlink/-supernode that records its arguments and environment, then exits 0."""
    fake = tmp_path / "fake-flower"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$0.args"\nenv > "$0.env"\n')
    fake.chmod(0o755)
    return fake


def _recorded(fake: Path) -> tuple[list[str], dict[str, str]]:
    args = Path(f"{fake}.args").read_text().splitlines()
    env = dict(line.split("=", 1) for line in Path(f"{fake}.env").read_text().splitlines() if "=" in line)
    return args, env


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_superlink_runs_with_tls_auth_and_offline_env(tmp_path, run_script, certs_dir, fake_flower) -> None:
    state = tmp_path / "state"
    result = run_script(
        "start-superlink.sh", "--certs", certs_dir, "--state-dir", state, "--port", "8123",
        FLOWER_SUPERLINK=str(fake_flower),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    args, env = _recorded(fake_flower)
    assert "--enable-supernode-auth" in args and "--insecure" not in args
    assert _flag(args, "--ssl-ca-certfile") == str(certs_dir / "ca.crt")
    assert _flag(args, "--ssl-certfile") == str(certs_dir / "superlink.crt")
    assert _flag(args, "--ssl-keyfile") == str(certs_dir / "superlink.key")
    assert _flag(args, "--port") == "8123" and _flag(args, "--database") == str(state / "state.db")
    assert "--disable-runtime-dependency-installation" in args
    assert {k: env[k] for k in OFFLINE} == OFFLINE
    assert env["FLWR_HOME"] == str(state / "flwr-home")
    assert "WARNING" not in result.stderr


def test_superlink_refuses_to_start_without_certificates(tmp_path, run_script, fake_flower) -> None:
    result = run_script("start-superlink.sh", "--certs", tmp_path / "none", FLOWER_SUPERLINK=str(fake_flower))
    assert result.returncode == 2
    assert "ca.crt not found" in result.stderr
    assert not Path(f"{fake_flower}.args").exists()


def test_superlink_refuses_an_expired_certificate(tmp_path, run_script, fake_flower) -> None:
    certs = tmp_path / "certs"
    assert run_script("make-ca.sh", "--out", certs, "--days", "0", "127.0.0.1").returncode == 0
    result = run_script("start-superlink.sh", "--certs", certs, "--print-command", FLOWER_SUPERLINK=str(fake_flower))
    assert result.returncode == 2 and "expired" in result.stderr


def test_superlink_insecure_is_explicit_and_loud(tmp_path, run_script, fake_flower) -> None:
    result = run_script(
        "start-superlink.sh", "--insecure", "--state-dir", tmp_path, "--print-command",
        FLOWER_SUPERLINK=str(fake_flower),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    assert command[0] == str(fake_flower)
    assert "--insecure" in command and "--enable-supernode-auth" not in command
    assert not any(a.startswith("--ssl") for a in command)
    assert "WARNING: flower-superlink started with --insecure" in result.stderr
    assert "local tests on 127.0.0.1 ONLY" in result.stderr
    assert not Path(f"{fake_flower}.args").exists()  # --print-command never starts it


def test_superlink_print_command_matches_what_runs(tmp_path, run_script, certs_dir, fake_flower) -> None:
    common = ("--certs", certs_dir, "--state-dir", tmp_path / "s", "--host", "127.0.0.1")
    printed = run_script("start-superlink.sh", *common, "--print-command", FLOWER_SUPERLINK=str(fake_flower))
    ran = run_script("start-superlink.sh", *common, FLOWER_SUPERLINK=str(fake_flower))
    assert printed.returncode == ran.returncode == 0
    assert shlex.split(printed.stdout)[1:] == _recorded(fake_flower)[0]


def test_supernode_runs_with_tls_key_and_node_config(tmp_path, run_script, certs_dir, keys_dir, fake_flower) -> None:
    result = run_script(
        "start-supernode.sh", "--superlink", "superlink.example.org:8000", "--site", "alpha",
        "--data-path", tmp_path / "data", "--cache-path", tmp_path / "cache", "--device", "cuda:1",
        "--root-cert", certs_dir / "ca.crt", "--key", keys_dir / "alpha", "--port", "9200",
        "--state-dir", tmp_path / "node", FLOWER_SUPERNODE=str(fake_flower),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    args, env = _recorded(fake_flower)
    assert _flag(args, "--superlink") == "superlink.example.org:8000"
    assert _flag(args, "--root-certificates") == str(certs_dir / "ca.crt")
    assert _flag(args, "--auth-supernode-private-key") == str(keys_dir / "alpha")
    assert _flag(args, "--port") == "9200" and "--insecure" not in args
    node_config = _flag(args, "--node-config")
    assert node_config == (
        f'site="alpha" data-path="{tmp_path / "data"}" cache-path="{tmp_path / "cache"}" device="cuda:1"'
    )
    assert {k: env[k] for k in OFFLINE} == OFFLINE and env["FLWR_HOME"] == str(tmp_path / "node" / "flwr-home")


def test_supernode_passes_allow_outside_paths_in_the_node_config(tmp_path, run_script, fake_flower) -> None:
    result = run_script(
        "start-supernode.sh", "--superlink", "127.0.0.1:8000", "--site", "alpha", "--data-path", tmp_path / "data",
        "--cache-path", tmp_path / "cache", "--allow-outside-paths", "--insecure", "--state-dir", tmp_path / "node",
        FLOWER_SUPERNODE=str(fake_flower),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _flag(_recorded(fake_flower)[0], "--node-config").endswith('device="cpu" allow-outside-paths=true')


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--key": "missing-key"}, "private key"),
        ({"--root-cert": "missing.crt"}, "certificate"),
        ({"--device": "gpu"}, "--device must be"),
        ({"--site": "a b"}, "site name"),
        ({"--superlink": "nohostport"}, "HOST:PORT"),
    ],
)
def test_supernode_refuses_bad_or_missing_security_inputs(
    tmp_path, run_script, certs_dir, keys_dir, fake_flower, change, message
) -> None:
    options = {
        "--superlink": "127.0.0.1:8000", "--site": "alpha", "--data-path": str(tmp_path), "--cache-path": str(tmp_path),
        "--root-cert": str(certs_dir / "ca.crt"), "--key": str(keys_dir / "alpha"),
    }  # fmt: skip
    options.update({k: str(tmp_path / v) if k in ("--key", "--root-cert") else v for k, v in change.items()})
    args = [part for item in options.items() for part in item]
    result = run_script("start-supernode.sh", *args, "--print-command", FLOWER_SUPERNODE=str(fake_flower))
    assert result.returncode == 2 and message in result.stderr


def test_supernode_insecure_drops_tls_and_key_and_warns(tmp_path, run_script, fake_flower) -> None:
    result = run_script(
        "start-supernode.sh", "--superlink", "127.0.0.1:8000", "--site", "alpha", "--data-path", tmp_path,
        "--cache-path", tmp_path, "--state-dir", tmp_path / "n", "--insecure", "--print-command",
        FLOWER_SUPERNODE=str(fake_flower),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    assert "--insecure" in command
    assert "--root-certificates" not in command and "--auth-supernode-private-key" not in command
    assert "WARNING: flower-supernode (alpha) started with --insecure" in result.stderr


def test_register_site_uses_a_tls_connection(tmp_path, run_script, certs_dir, keys_dir) -> None:
    result = run_script(
        "register-site.sh", "--superlink", "127.0.0.1:8000", "--root-cert", certs_dir / "ca.crt", "--print-command",
        "alpha", keys_dir / "alpha.pub",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = shlex.split(result.stdout)
    assert command[1:4] == ["supernode", "register", str(keys_dir / "alpha.pub")]
    assert command[-2:] == ["--name", "alpha"]
    wrong_key = tmp_path / "rsa.pub"
    wrong_key.write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ test\n")
    refused = run_script("register-site.sh", "--root-cert", certs_dir / "ca.crt", "alpha", wrong_key)
    assert refused.returncode == 2 and "not an ECDSA P-384" in refused.stderr


def _supernode_args(tmp_path: Path, certs_dir: Path, key: Path) -> list[str | Path]:
    return [
        "--superlink", "127.0.0.1:8000", "--site", "alpha", "--data-path", tmp_path, "--cache-path", tmp_path,
        "--state-dir", tmp_path / "node", "--root-cert", certs_dir / "ca.crt", "--key", key,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "starts"),
    [("600", True), ("400", True), ("640", False), ("604", False), ("644", False), ("660", False), ("610", False)],
)
def test_supernode_refuses_a_key_with_group_or_other_bits(
    tmp_path, run_script, certs_dir, keys_dir, fake_flower, mode, starts
) -> None:
    """The rule of `cccmr doctor`: no group or other bits at all, so a group-readable 640 is refused too."""
    key = tmp_path / "alpha"
    key.write_bytes((keys_dir / "alpha").read_bytes())
    key.chmod(int(mode, 8))
    args = _supernode_args(tmp_path, certs_dir, key)
    result = run_script("start-supernode.sh", *args, FLOWER_SUPERNODE=str(fake_flower))
    if starts:
        assert result.returncode == 0, result.stderr
        assert _flag(_recorded(fake_flower)[0], "--auth-supernode-private-key") == str(key)
    else:
        assert result.returncode == 2, result.stderr
        assert f"mode {mode}" in result.stderr and f"chmod 600 {key}" in result.stderr
        assert not Path(f"{fake_flower}.args").exists()


def test_superlink_refuses_a_group_readable_tls_key(tmp_path, run_script, certs_dir, fake_flower) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "superlink.crt", "superlink.key"):
        (certs / name).write_bytes((certs_dir / name).read_bytes())
    (certs / "superlink.key").chmod(0o640)
    result = run_script("start-superlink.sh", "--certs", certs, "--state-dir", tmp_path / "s",
                        FLOWER_SUPERLINK=str(fake_flower))  # fmt: skip
    assert result.returncode == 2 and "mode 640" in result.stderr
    assert not Path(f"{fake_flower}.args").exists()


def test_superlink_refuses_a_readable_superexec_secret(tmp_path, run_script, certs_dir, fake_flower) -> None:
    secret = tmp_path / "superexec.secret"
    secret.write_text("4f1c" * 16)
    common = ("--certs", certs_dir, "--state-dir", tmp_path / "s", "--isolation", "process",
              "--superexec-secret", secret)  # fmt: skip
    secret.chmod(0o644)
    refused = run_script("start-superlink.sh", *common, FLOWER_SUPERLINK=str(fake_flower))
    assert refused.returncode == 2 and "SuperExec secret" in refused.stderr and "mode 644" in refused.stderr
    secret.chmod(0o600)
    started = run_script("start-superlink.sh", *common, FLOWER_SUPERLINK=str(fake_flower))
    assert started.returncode == 0, started.stderr
    assert _flag(_recorded(fake_flower)[0], "--superexec-auth-secret-file") == str(secret)


@pytest.mark.parametrize(
    ("host_args", "host"),
    [([], "127.0.0.1"), (["--host", "127.0.0.2"], "127.0.0.2"), (["--host", "::1"], "::1"),
     (["--host", "localhost"], "localhost")],
)  # fmt: skip
def test_superlink_insecure_listens_on_loopback(tmp_path, run_script, fake_flower, host_args, host) -> None:
    result = run_script(
        "start-superlink.sh", "--insecure", "--state-dir", tmp_path, *host_args, FLOWER_SUPERLINK=str(fake_flower)
    )
    assert result.returncode == 0, result.stderr
    args = _recorded(fake_flower)[0]
    assert _flag(args, "--host") == host and "--insecure" in args


@pytest.mark.parametrize(
    "host_args",
    [["--host", "0.0.0.0"], ["--host", "192.168.1.20"], ["--host", "::"], ["--host", "127.example.org"],
     ["--", "--host", "0.0.0.0"], ["--", "--fleet-api-address=0.0.0.0:9092"]],
)  # fmt: skip
def test_superlink_insecure_refuses_a_network_address(tmp_path, run_script, fake_flower, host_args) -> None:
    result = run_script(
        "start-superlink.sh", "--insecure", "--state-dir", tmp_path, *host_args, FLOWER_SUPERLINK=str(fake_flower)
    )
    assert result.returncode == 2, result.stderr
    assert "loopback only" in result.stderr or "this script's own options" in result.stderr
    assert not Path(f"{fake_flower}.args").exists()


@pytest.mark.parametrize(
    ("superlink", "host"),
    [("superlink.example.org:9092", "127.0.0.1"), ("10.0.0.5:9092", "127.0.0.1"), ("127.0.0.1:9092", "0.0.0.0")],
)
def test_supernode_insecure_refuses_a_network_address(tmp_path, run_script, fake_flower, superlink, host) -> None:
    """Issue 16 point 12 for the SuperNode side: plain text never leaves the host, towards the SuperLink or in."""
    args = _insecure_supernode(tmp_path, "--host", host)
    args[args.index("127.0.0.1:8000")] = superlink
    result = run_script("start-supernode.sh", *args, FLOWER_SUPERNODE=str(fake_flower))
    assert result.returncode == 2 and "loopback only" in result.stderr, result.stderr
    assert not Path(f"{fake_flower}.args").exists()


def test_supernode_insecure_accepts_loopback_superlinks(tmp_path, run_script, fake_flower) -> None:
    for superlink in ("localhost:9092", "[::1]:9092", "127.0.0.2:9092"):
        args = _insecure_supernode(tmp_path, "--print-command")
        args[args.index("127.0.0.1:8000")] = superlink
        result = run_script("start-supernode.sh", *args, FLOWER_SUPERNODE=str(fake_flower))
        assert result.returncode == 0, (superlink, result.stderr)


def _insecure_supernode(tmp_path: Path, *more: str | Path) -> list[str | Path]:
    return [
        "--superlink", "127.0.0.1:8000", "--site", "alpha", "--data-path", tmp_path / "data",
        "--cache-path", tmp_path / "cache", "--insecure", "--state-dir", tmp_path / "node", *more,
    ]  # fmt: skip


def test_supernode_passes_the_worker_socket_in_the_node_config(tmp_path, run_script, fake_flower) -> None:
    sock = tmp_path / "run" / "worker.sock"
    args = _insecure_supernode(tmp_path, "--worker-socket", sock)
    result = run_script("start-supernode.sh", *args, FLOWER_SUPERNODE=str(fake_flower))
    assert result.returncode == 0, result.stderr
    assert _flag(_recorded(fake_flower)[0], "--node-config").endswith(f'device="cpu" worker-socket="{sock}"')
    assert f"no site worker listens at {sock} yet" in result.stderr  # a note, never a refusal: it may start later
    sock.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(sock))
        listener.listen()
        result = run_script("start-supernode.sh", *args, FLOWER_SUPERNODE=str(fake_flower))
    assert result.returncode == 0 and "no site worker listens" not in result.stderr
    assert f"Forwarding messages to the site worker at {sock}" in result.stderr


def test_supernode_without_a_worker_socket_trains_in_the_clientapp(tmp_path, run_script, fake_flower) -> None:
    """An empty --worker-socket (the systemd unit's default) leaves worker-socket out of the node config."""
    result = run_script("start-supernode.sh", *_insecure_supernode(tmp_path, "--worker-socket", ""),
                        FLOWER_SUPERNODE=str(fake_flower))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "worker-socket" not in _flag(_recorded(fake_flower)[0], "--node-config")
    assert "site worker" not in result.stderr


@pytest.mark.parametrize(
    ("path", "message"),
    [("run/worker.sock", "absolute path"), ("/run/cccmr/a b.sock", "quotes or spaces"),
     ('/run/"x".sock', "quotes or spaces"), ("/" + "w" * 107, "longer than 107 bytes")],
)  # fmt: skip
def test_supernode_refuses_a_bad_worker_socket(tmp_path, run_script, fake_flower, path, message) -> None:
    args = _insecure_supernode(tmp_path, "--worker-socket", path, "--print-command")
    result = run_script("start-supernode.sh", *args, FLOWER_SUPERNODE=str(fake_flower))
    assert result.returncode == 2 and message in result.stderr
