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


def _environment(unit: dict[str, list[tuple[str, str]]], env_file: Path) -> dict[str, str]:
    env = dict(v.split("=", 1) for k, v in unit["Service"] if k == "Environment")
    for line in env_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            env[key] = value
    return env


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
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], service["ExecStart"]).replace("%i", instance)
    for real, test in [
        ("/opt/cccmr/deploy", str(deploy_dir)), ("/etc/cccmr/certs", str(certs_dir)),
        ("/etc/cccmr/keys", str(keys_dir)), ("/var/lib/cccmr", str(tmp_path / "lib")),
        ("/var/cache/cccmr", str(tmp_path / "cache")),
    ]:  # fmt: skip
        command = command.replace(real, test)
    script, *args = shlex.split(command)
    assert Path(script).parent == deploy_dir
    result = run_script(Path(script).name, "--print-command", *args)
    assert result.returncode == 0, result.stderr
    printed = shlex.split(result.stdout)
    assert "--insecure" not in printed and "WARNING" not in result.stderr
    if instance:
        assert "--auth-supernode-private-key" in printed and "--root-certificates" in printed
        assert 'site="alpha"' in printed[printed.index("--node-config") + 1]
    else:
        assert "--enable-supernode-auth" in printed and "--ssl-certfile" in printed
        assert "--log-rotation-interval-hours" in printed


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
