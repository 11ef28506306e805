"""A real SuperLink started by start-superlink.sh (TLS + SuperNode auth on 127.0.0.1): a registered SuperNode
connects, an unregistered one is refused (Flower exit code 305, logged; the process status is 1). Every process
started here is stopped by its pid."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cccmr_model.processes import free_port, listening, stop, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _start(processes: list, argv: list, log: Path, env: dict[str, str]) -> subprocess.Popen:
    process = subprocess.Popen(
        [str(a) for a in argv], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    processes.append(process)
    return process


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):
        stop(process)


def test_registered_supernode_joins_and_unregistered_is_refused(
    tmp_path: Path, certs_dir, keys_dir, processes: list[subprocess.Popen], run_script, script_env, deploy_dir
) -> None:
    port = free_port()
    state = tmp_path / "superlink"
    env = script_env()

    def start(script: str, *args: str | Path, log: str) -> subprocess.Popen:
        out = (tmp_path / log).open("w")
        process = subprocess.Popen(
            ["bash", str(deploy_dir / script), *map(str, args)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        processes.append(process)
        return process

    superlink = start(
        "start-superlink.sh", "--certs", certs_dir, "--state-dir", state, "--host", "127.0.0.1", "--port", str(port),
        log="superlink.out",
    )  # fmt: skip
    wait_for(lambda: listening(port) or superlink.poll() is not None, 30, "the SuperLink to listen")
    assert superlink.poll() is None, (tmp_path / "superlink.out").read_text()

    registered = run_script(
        "register-site.sh", "--superlink", f"127.0.0.1:{port}", "--root-cert", certs_dir / "ca.crt",
        "alpha", keys_dir / "alpha.pub", timeout=30,
    )  # fmt: skip
    assert registered.returncode == 0, registered.stdout + registered.stderr
    node_id = re.search(r"SuperNode (\d+) registered", registered.stdout).group(1)

    def supernode(site: str) -> subprocess.Popen:
        return start(
            "start-supernode.sh", "--superlink", f"127.0.0.1:{port}", "--site", site, "--data-path", tmp_path,
            "--cache-path", tmp_path / f"cache-{site}", "--root-cert", certs_dir / "ca.crt",
            "--key", keys_dir / site, "--port", str(free_port()), "--state-dir", tmp_path / site,
            "--", "--max-retries", "2", "--max-wait-time", "10",
            log=f"{site}.out",
        )  # fmt: skip

    alpha, beta = supernode("alpha"), supernode("beta")
    log = state / "logs" / "superlink.log"
    wait_for(lambda: f"Activated node_id={node_id}" in log.read_text(), 30, "the registered SuperNode to join")
    assert beta.wait(timeout=30) == 1  # flwr_exit maps every error code to process status 1
    beta_out = (tmp_path / "beta.out").read_text()
    assert "Exit Code: 305" in beta_out and "Failed to activate SuperNode" in beta_out, beta_out
    assert "No SuperNode found with the given public key" in log.read_text()
    assert alpha.poll() is None, (tmp_path / "alpha.out").read_text()
    assert "SuperNode ID" in (tmp_path / "alpha.out").read_text()

    for process in reversed(processes):
        stop(process)
    assert all(p.poll() is not None for p in processes)
    assert not listening(port)


def test_in_memory_superlink_registers_the_sites_again_at_every_start(
    tmp_path: Path, certs_dir, keys_dir, processes: list[subprocess.Popen], script_env, deploy_dir
) -> None:
    port = free_port()
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "alpha.pub").write_bytes((keys_dir / "alpha.pub").read_bytes())
    env = script_env()

    def start(script: str, *args: str | Path, log: str) -> subprocess.Popen:
        return _start(processes, ["bash", deploy_dir / script, *args], tmp_path / log, env)

    def superlink(log: str) -> subprocess.Popen:
        link = start("start-superlink.sh", "--certs", certs_dir, "--state-dir", tmp_path / "link", "--host",
                     "127.0.0.1", "--port", str(port), "--state", "memory", "--sites-dir", sites, log=log)  # fmt: skip
        out = tmp_path / log
        wait_for(lambda: "registered" in out.read_text() or link.poll() is not None, 60, "the sites' registration")
        assert link.poll() is None, out.read_text()
        assert not (tmp_path / "link" / "state.db").exists()  # nothing on disk: the state is in memory
        return link

    def supernode(log: str) -> subprocess.Popen:
        return start(
            "start-supernode.sh", "--superlink", f"127.0.0.1:{port}", "--site", "alpha", "--data-path", tmp_path,
            "--cache-path", tmp_path / "cache", "--root-cert", certs_dir / "ca.crt", "--key", keys_dir / "alpha",
            "--port", str(free_port()), "--state-dir", tmp_path / "alpha", "--", "--max-retries", "2",
            "--max-wait-time", "10", log=log,
        )  # fmt: skip

    log = tmp_path / "link" / "logs" / "superlink.log"
    for attempt in (1, 2):  # the second SuperLink starts with an empty state: alpha is registered again
        link = superlink(f"superlink-{attempt}.out")
        node = supernode(f"alpha-{attempt}.out")
        wait_for(lambda: log.read_text().count("Activated node_id") >= attempt, 40, "alpha to join")  # noqa: B023
        stop(node)
        stop(link)
        assert link.returncode is not None and not listening(port)


def test_process_isolation_commands_of_the_compose_files(
    tmp_path: Path, certs_dir, keys_dir, processes: list[subprocess.Popen], run_script, script_env, deploy_dir
) -> None:
    """The Docker layout as plain processes: SuperLink and SuperNode in process isolation, each with its own
    flower-superexec; a SuperExec without the shared secret is refused by the SuperLink's Runtime API."""
    port, node_port = free_port(), free_port()
    env = script_env()
    secret = tmp_path / "superexec.secret"
    secret.write_text("4f1c" * 16)
    secret.chmod(0o600)
    state = tmp_path / "superlink"
    superlink = _start(
        processes, ["bash", deploy_dir / "start-superlink.sh", "--certs", certs_dir, "--state-dir", state, "--host",
                    "127.0.0.1", "--port", port, "--isolation", "process", "--superexec-secret", secret],
        tmp_path / "superlink.out", env,
    )  # fmt: skip
    wait_for(lambda: listening(port) or superlink.poll() is not None, 30, "the SuperLink to listen")
    superexec = [Path(sys.executable).parent / "flower-superexec", f"--runtime-api-address=127.0.0.1:{port}",
                 f"--root-certificates={certs_dir / 'ca.crt'}"]  # fmt: skip
    good = _start(processes, [*superexec, f"--superexec-auth-secret-file={secret}"], tmp_path / "good.out", env)
    rogue = _start(processes, superexec, tmp_path / "rogue.out", env)
    assert run_script(
        "register-site.sh", "--superlink", f"127.0.0.1:{port}", "--root-cert", certs_dir / "ca.crt",
        "alpha", keys_dir / "alpha.pub", timeout=30,
    ).returncode == 0  # fmt: skip
    supernode = _start(
        processes, ["bash", deploy_dir / "start-supernode.sh", "--superlink", f"127.0.0.1:{port}", "--site", "alpha",
                    "--data-path", tmp_path, "--cache-path", tmp_path / "cache", "--root-cert", certs_dir / "ca.crt",
                    "--key", keys_dir / "alpha", "--port", node_port, "--state-dir", tmp_path / "alpha",
                    "--isolation", "process"],
        tmp_path / "supernode.out", env,
    )  # fmt: skip
    wait_for(lambda: listening(node_port), 30, "the SuperNode's Runtime API")
    clientapp_exec = _start(
        processes, [superexec[0], f"--runtime-api-address=127.0.0.1:{node_port}", "--insecure"],
        tmp_path / "clientexec.out", env,
    )  # fmt: skip
    log = state / "logs" / "superlink.log"
    wait_for(lambda: "SuperExec authentication failed" in log.read_text(), 30, "the rogue SuperExec's refusal")
    wait_for(lambda: "Activated node_id" in log.read_text(), 30, "the SuperNode to join")
    time.sleep(3)  # both legitimate SuperExecs keep polling without errors
    assert superlink.poll() is None and supernode.poll() is None
    assert good.poll() is None, (tmp_path / "good.out").read_text()
    assert clientapp_exec.poll() is None, (tmp_path / "clientexec.out").read_text()
    assert "ERROR" not in (tmp_path / "good.out").read_text() + (tmp_path / "clientexec.out").read_text()
    rogue_exited = rogue.wait(timeout=20)
    assert rogue_exited is not None
    for process in reversed(processes):
        stop(process)
    assert not listening(port) and not listening(node_port)
