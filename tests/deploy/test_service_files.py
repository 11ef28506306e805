"""systemd units and Docker files: they parse, pin Flower 1.42.0, and keep TLS + SuperNode authentication on."""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

FLOWER_VERSION = "1.42.0"


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as section -> [(key, value)] (keys may repeat, as Environment= does)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path}: bad section line {line!r}"
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"{path}: bad line {line!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def _environment(unit: dict[str, list[tuple[str, str]]], env_file: Path, *, uncomment: str = "") -> dict[str, str]:
    """The unit's Environment= values, then the env file's (with its `#UNCOMMENT=` line taken as set)."""
    env = dict(v.split("=", 1) for k, v in unit["Service"] if k == "Environment")
    for line in env_file.read_text().splitlines():
        if uncomment and line.startswith(f"#{uncomment}="):
            line = line[1:]
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


def _values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    """Every space-separated value of KEY in SECTION (After=, WantedBy= ... may repeat and list several)."""
    return [word for k, v in unit.get(section, []) if k == key for word in v.split()]


def _exec_start(unit: dict[str, list[tuple[str, str]]], env: dict[str, str], instance: str) -> list[str]:
    """ExecStart= as systemd runs it: ${VAR} from ENV, %i the instance name."""
    command = dict(unit["Service"])["ExecStart"]
    return shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], command).replace("%i", instance))


@pytest.mark.parametrize(
    ("unit_name", "env_example", "instance"),
    [
        ("flower-superlink.service", "superlink.env.example", ""),
        ("flower-supernode@.service", "supernode.env.example", "alpha"),
    ],
)
def test_systemd_unit_runs_our_script_with_tls(
    tmp_path, deploy_dir, run_script, certs_dir, keys_dir, unit_name, env_example, instance
) -> None:
    unit = _unit(deploy_dir / "systemd" / unit_name)
    assert {"Unit", "Service", "Install"} <= set(unit)
    service = dict(unit["Service"])
    assert service["User"] == "cccmr" and service["Restart"] == "on-failure" and service["NoNewPrivileges"] == "yes"
    env = _environment(unit, deploy_dir / "systemd" / env_example)
    result = _print_command(_exec_start(unit, env, instance), tmp_path, deploy_dir, run_script, certs_dir, keys_dir)
    printed = shlex.split(result.stdout)
    assert "--insecure" not in printed and "WARNING" not in result.stderr
    if instance:
        assert "--auth-supernode-private-key" in printed and "--root-certificates" in printed
        node_config = printed[printed.index("--node-config") + 1]
        assert 'site="alpha"' in node_config and "worker-socket" not in node_config  # no worker unless configured
    else:
        assert "--enable-supernode-auth" in printed and "--ssl-certfile" in printed
        assert "--log-rotation-interval-hours" in printed


def _print_command(command: list[str], tmp_path: Path, deploy_dir: Path, run_script, certs_dir: Path,
                   keys_dir: Path):  # fmt: skip
    """Run a unit's deploy/ script with --print-command, its /opt, /etc and /var paths mapped to the test's."""
    for real, test in [
        ("/opt/cccmr/deploy", str(deploy_dir)), ("/etc/cccmr/certs", str(certs_dir)),
        ("/etc/cccmr/keys", str(keys_dir)), ("/var/lib/cccmr", str(tmp_path / "lib")),
        ("/var/cache/cccmr", str(tmp_path / "cache")),
    ]:  # fmt: skip
        command = [part.replace(real, test) for part in command]
    script, *args = command
    assert Path(script).parent == deploy_dir
    result = run_script(Path(script).name, "--print-command", *args)
    assert result.returncode == 0, result.stderr
    return result


def _worker_units(deploy_dir: Path) -> tuple[dict, dict]:
    systemd = deploy_dir / "systemd"
    return _unit(systemd / "cccmr-site-worker@.service"), _unit(systemd / "flower-supernode@.service")


def test_site_worker_unit_runs_cccmr_site_worker_like_the_supernode(deploy_dir) -> None:
    """Same user, cache and hardening as the SuperNode, no network, always restarted, its socket in /run/cccmr."""
    from cccmr_model.cli import build_parser

    worker, supernode = _worker_units(deploy_dir)
    assert {"Unit", "Service", "Install"} <= set(worker)
    w, n = dict(worker["Service"]), dict(supernode["Service"])
    assert (w["User"], w["Group"]) == (n["User"], n["Group"]) == ("cccmr", "cccmr")
    assert w["Restart"] == "always"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectSystem", "ProtectHome", "KillMode", "CacheDirectory"):
        assert w[key] == n[key], key
    assert w["PrivateNetwork"] == "yes"
    assert (w["RuntimeDirectory"], w["RuntimeDirectoryMode"]) == ("cccmr/%i", "0700")
    command = _exec_start(worker, _environment(worker, Path("/dev/null")), "%i")
    assert command[0] == "/opt/cccmr/venv/bin/cccmr"
    args = build_parser().parse_args(command[1:])  # the real CLI accepts the unit's arguments
    assert args.command == "site-worker" and args.site_config == "/etc/cccmr/site-%i.toml"
    assert args.socket == Path("/run/cccmr/%i/worker.sock")  # inside its RuntimeDirectory


def test_supernode_wants_the_site_worker_but_never_requires_it(deploy_dir) -> None:
    """Enabling the worker adds it to the SuperNode's wants and orders it first; the SuperNode never depends on it
    hard, so a dead worker costs a round, not the SuperNode's connection."""
    worker, supernode = _worker_units(deploy_dir)
    assert "flower-supernode@%i.service" in _values(worker, "Install", "WantedBy")
    assert "flower-supernode@%i.service" in _values(worker, "Unit", "Before")
    assert "cccmr-site-worker@%i.service" in _values(supernode, "Unit", "After")
    for unit in (worker, supernode):
        for key in ("Requires", "Requisite", "BindsTo", "PartOf"):
            assert not [v for v in _values(unit, "Unit", key) if "site-worker" in v or "supernode" in v], key
    assert not [v for v in _values(supernode, "Unit", "Wants") if "site-worker" in v]  # a site may have no worker


def test_units_and_examples_name_one_worker_socket(tmp_path, deploy_dir, run_script, certs_dir, keys_dir) -> None:
    """CCCMR_WORKER_SOCKET in supernode.env.example reaches the node config and is the worker unit's socket; the
    site file example names the same path for cccmr doctor."""
    worker, supernode = _worker_units(deploy_dir)
    example = deploy_dir / "systemd" / "supernode.env.example"
    env = _environment(supernode, example, uncomment="CCCMR_WORKER_SOCKET")
    env = {k: v.replace("SITE", "alpha") for k, v in env.items()}
    result = _print_command(_exec_start(supernode, env, "alpha"), tmp_path, deploy_dir, run_script, certs_dir,
                            keys_dir)  # fmt: skip
    printed = shlex.split(result.stdout)
    node_config = printed[printed.index("--node-config") + 1]
    assert node_config.endswith(' worker-socket="/run/cccmr/alpha/worker.sock"')
    worker_command = _exec_start(worker, {"CCCMR_SITE_CONFIG": "site.toml"}, "alpha")
    assert worker_command[worker_command.index("--socket") + 1] == "/run/cccmr/alpha/worker.sock"
    site_example = (deploy_dir / "site-config.example.toml").read_text()
    line = next(line for line in site_example.splitlines() if line.startswith("# worker-socket = "))
    anzhen = _exec_start(worker, {"CCCMR_SITE_CONFIG": "x"}, "anzhen")
    assert line.split('"')[1] == anzhen[anzhen.index("--socket") + 1]


@cache
def _help(executable: str) -> str:
    exe = Path(sys.executable).parent / executable
    return subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout


def _flags(command: list[str]) -> set[str]:
    return {part.split("=", 1)[0] for part in command if part.startswith("--")}


def _compose(deploy_dir: Path, name: str) -> dict:
    return yaml.safe_load((deploy_dir / "docker" / name).read_text())


def test_coordinator_compose_keeps_tls_and_auth(deploy_dir) -> None:
    services = _compose(deploy_dir, "compose.coordinator.yaml")["services"]
    superlink, superexec = services["superlink"], services["superexec-serverapp"]
    assert superlink["image"] == f"flwr/superlink:{FLOWER_VERSION}"
    flags = _flags(superlink["command"])
    assert {"--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile", "--enable-supernode-auth"} <= flags
    assert "--isolation=process" in superlink["command"] and "--insecure" not in flags
    assert flags <= set(re.findall(r"--[\w-]+", _help("flower-superlink")))
    assert superexec["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert "--root-certificates=/certs/ca.crt" in superexec["command"] and "--insecure" not in superexec["command"]
    assert "--runtime-api-address=superlink:8000" in superexec["command"]
    assert _flags(superexec["command"]) <= set(re.findall(r"--[\w-]+", _help("flower-superexec")))


def test_site_compose_keeps_tls_and_auth(deploy_dir) -> None:
    compose = _compose(deploy_dir, "compose.site.yaml")
    supernode, superexec = compose["services"]["supernode"], compose["services"]["superexec-clientapp"]
    assert supernode["image"] == f"flwr/supernode:{FLOWER_VERSION}"
    flags = _flags(supernode["command"])
    assert {"--root-certificates", "--auth-supernode-private-key", "--node-config"} <= flags
    assert "--insecure" not in flags and "--isolation=process" in supernode["command"]
    assert flags <= set(re.findall(r"--[\w-]+", _help("flower-supernode")))
    node_config = next(c for c in supernode["command"] if c.startswith("--node-config="))
    assert all(f'{key}="' in node_config for key in ("site", "data-path", "cache-path", "device"))
    # the plain-HTTP hop to the SuperNode's Runtime API stays on an internal network without published ports
    assert compose["networks"]["runtime"]["internal"] is True
    assert superexec["networks"] == ["runtime"] and "ports" not in supernode and "ports" not in superexec
    assert any(v.endswith(":/data:ro") for v in superexec["volumes"])


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, from ENV."""

    def value(match: re.Match) -> str:
        name, operator, rest = match.groups()
        if env.get(name):
            return env[name]
        assert operator == ":-", f"{name} must be set: {rest}"
        return rest

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", value, text)


def _dotenv(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_site_compose_runs_the_warm_worker_next_to_the_supernode(tmp_path, deploy_dir) -> None:
    from cccmr_model.cli import build_parser
    from cccmr_model.doctor import load_site_config

    compose = _compose(deploy_dir, "compose.site.yaml")
    services = compose["services"]
    supernode, clientapp, worker = services["supernode"], services["superexec-clientapp"], services["site-worker"]
    assert (worker["image"], worker["build"]) == (clientapp["image"], clientapp["build"])  # the same code
    assert worker["restart"] == "unless-stopped" and worker["network_mode"] == "none" and "ports" not in worker
    shared = [v for v in clientapp["volumes"] if v.endswith((":/data:ro", ":/cache"))]
    assert len(shared) == 2 and set(shared) <= set(worker["volumes"])  # the ClientApps' data and cache
    for service in (worker, clientapp, services["doctor"]):
        assert "worker-socket:/run/cccmr" in service["volumes"]
    volume = compose["volumes"]["worker-socket"]["driver_opts"]
    assert volume["type"] == "tmpfs" and {"uid=49999", "mode=0700"} <= set(volume["o"].split(","))
    assert not any("/dev/shm" in v for service in services.values() for v in service.get("volumes", []))
    assert all("site-worker" not in service.get("depends_on", []) for service in services.values())
    node_config = next(c for c in supernode["command"] if c.startswith("--node-config="))
    assert node_config.endswith(' worker-socket="/run/cccmr/worker.sock"')
    assert worker["entrypoint"] == ["cccmr"]
    args = build_parser().parse_args(worker["command"])
    assert args.command == "site-worker" and args.socket == Path("/run/cccmr/worker.sock")
    assert [c["target"] for c in worker["configs"]] == [args.site_config]
    site_file = tmp_path / "site.toml"
    env = _dotenv(deploy_dir / "docker" / "site.env.example")
    site_file.write_text(_interpolate(compose["configs"]["site"]["content"], env))
    site = load_site_config(site_file)  # what the worker and `docker compose run --rm doctor` read
    assert (site.name, site.data_path, site.cache_path) == (env["CCCMR_SITE"], Path("/data"), Path("/cache"))
    assert site.worker_socket == args.socket
    doctor = services["doctor"]
    assert doctor["profiles"] == ["doctor"] and doctor["entrypoint"][0] == "cccmr"
    assert build_parser().parse_args(doctor["entrypoint"][1:]).site_config == args.site_config


def test_dockerfile_builds_on_the_pinned_superexec_image(deploy_dir) -> None:
    text = (deploy_dir / "docker" / "Dockerfile").read_text()
    assert re.search(rf"^FROM flwr/superexec:{re.escape(FLOWER_VERSION)}$", text, re.M)
    repo = deploy_dir.parent
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in source.split():
            assert (repo / item).exists(), f"Dockerfile copies {item}, which is not in the repository"
    assert 'ENTRYPOINT ["flower-superexec"]' in text


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode != 0,
    reason="docker compose client not installed",
)
@pytest.mark.parametrize("name", ["compose.coordinator.yaml", "compose.site.yaml"])
def test_docker_compose_config_accepts_the_files(deploy_dir, tmp_path, name) -> None:
    env = tmp_path / ".env"
    env.write_text((deploy_dir / "docker" / "site.env.example").read_text())
    result = subprocess.run(
        ["docker", "compose", "--env-file", env, "-f", deploy_dir / "docker" / name, "config", "--quiet"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _secret_recipe(text: str) -> str:
    """The one command in TEXT that writes superexec.secret (a README line or a compose comment)."""
    lines = [line.lstrip("# ").strip() for line in text.splitlines() if "> superexec.secret" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("existing_mode", [None, 0o644], ids=["new", "replaces-644"])
def test_docker_superexec_secret_recipe_makes_a_private_file(tmp_path, deploy_dir, existing_mode) -> None:
    """The Docker recipe's secret is 600 even under umask 022, and when an older, world-readable one is replaced."""
    recipe = _secret_recipe((deploy_dir / "README.md").read_text())
    assert recipe == _secret_recipe((deploy_dir / "docker" / "compose.coordinator.yaml").read_text())
    secret = tmp_path / "superexec.secret"
    if existing_mode is not None:
        secret.write_text("old secret\n")
        secret.chmod(existing_mode)
    subprocess.run(["bash", "-c", f"umask 022 && {recipe}"], cwd=tmp_path, check=True, timeout=30)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}\n", secret.read_text())
