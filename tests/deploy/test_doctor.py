"""`cccmr doctor` on a good site (phantom DICOM, TLS server with the right certificate) and on broken ones."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from cccmr_model.channel import app_fingerprint
from cccmr_model.cli import main
from cccmr_model.doctor import FAIL, OK, WARN, Check, check_worker, load_site_config, run_checks
from cccmr_model.errors import ConfigError
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, write_series
from cccmr_model.site.worker import open_socket, serve


@pytest.fixture
def tls_server(certs_dir: Path) -> Iterator[int]:
    """A TLS listener on 127.0.0.1 presenting the SuperLink certificate (completes handshakes, then closes)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs_dir / "superlink.crt", certs_dir / "superlink.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                conn.settimeout(2)
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    listener.close()


def _cine(out: Path, slices: int) -> None:
    rng = np.random.default_rng(slices)
    array = rng.uniform(0, 500, (slices, 8, 32, 32)).astype(np.float32)  # S, F, R, C
    geometry = Geometry.stack([0.0, 0.0, 0.0], (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), slices, 8.0)
    trigger = np.tile(np.arange(8) * 100.0, (slices, 1))
    write_series(out, array, Sampling(geometry, (1.5, 1.5), 8.0, trigger))


@pytest.fixture
def site_dir(tmp_path: Path, certs_dir: Path, keys_dir: Path) -> Path:
    data = tmp_path / "data"
    _cine(data / "s001" / "4ch", 1)
    _cine(data / "s001" / "sax", 3)
    header = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax"
    (data / "manifest.csv").write_text(f"{header}\ns001,1,HCM,s001/4ch,s001/sax,\n")
    return tmp_path


def _write_config(site_dir: Path, certs_dir: Path, keys_dir: Path, port: int, **change: str) -> Path:
    values = {
        "site": "alpha", "data-path": "data", "cache-path": "cache", "device": "cpu",
        "superlink": f"127.0.0.1:{port}", "root-certificate": str(certs_dir / "ca.crt"),
        "private-key": str(keys_dir / "alpha"), "config": "tiny", "connect-timeout": 2,
    }  # fmt: skip
    values.update(change)
    lines = [f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"' for k, v in values.items()]
    path = site_dir / "site.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_site_passes_every_check(site_dir, certs_dir, keys_dir, tls_server, capsys) -> None:
    config = _write_config(site_dir, certs_dir, keys_dir, tls_server)
    checks = {c.name: c for c in run_checks(load_site_config(config))}
    assert [n for n, c in checks.items() if c.status != OK] == []
    assert set(checks) >= {"python", "torch + device", "manifest", "dry ingest", "site key", "superlink certificate"}
    assert "cine_4ch 1x8" in checks["dry ingest"].detail and "cine_sax 3x8" in checks["dry ingest"].detail
    assert "127.0.0.1" in checks["superlink certificate"].detail
    assert main(["doctor", "--site-config", str(config)]) == 0
    assert "ready to join" in capsys.readouterr().out


def test_bad_site_fails_and_says_what_to_fix(site_dir, certs_dir, keys_dir, tls_server, capsys) -> None:
    (site_dir / "data" / "manifest.csv").unlink()
    loose_key = site_dir / "loose"
    loose_key.write_bytes((keys_dir / "alpha").read_bytes())
    loose_key.chmod(0o644)
    change = {"device": "cuda:7", "private-key": str(loose_key)}
    config = _write_config(site_dir, certs_dir, keys_dir, tls_server, **change)
    checks = {c.name: c for c in run_checks(load_site_config(config))}
    assert checks["manifest"].status == FAIL and "manifest not found" in checks["manifest"].detail
    assert checks["site key"].status == FAIL and "chmod 600" in checks["site key"].fix
    assert checks["torch + device"].status == FAIL
    assert main(["doctor", "--site-config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] manifest" in out and "fix:" in out and "NOT ready" in out


def test_wrong_hostname_and_unreachable_superlink_fail(site_dir, certs_dir, keys_dir, tls_server) -> None:
    wrong_name = _write_config(site_dir, certs_dir, keys_dir, tls_server, superlink=f"127.0.0.2:{tls_server}")
    checks = {c.name: c for c in run_checks(load_site_config(wrong_name))}
    if checks["superlink reachable"].status == OK:  # 127.0.0.2 routes to loopback on Linux
        assert checks["superlink certificate"].status == FAIL
        assert "mismatch" in checks["superlink certificate"].detail.lower()
        assert "127.0.0.1" in checks["superlink certificate"].detail  # the SANs it does have
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    unreachable = _write_config(site_dir, certs_dir, keys_dir, closed_port)
    checks = {c.name: c for c in run_checks(load_site_config(unreachable))}
    assert checks["superlink reachable"].status == FAIL


def test_site_config_with_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    keys = ["site: a", "data-path: /d", "cache-path: /c", "superlink: h:1", "root-certificate: x", "private-key: k"]
    path.write_text("\n".join([*keys, "gpu: 1"]) + "\n")
    with pytest.raises(ConfigError, match="unknown keys \\['gpu'\\]"):
        load_site_config(path)


def test_example_site_config_parses(deploy_dir: Path) -> None:
    site = load_site_config(deploy_dir / "site-config.example.toml")
    assert site.site == "anzhen" and site.device == "cuda" and site.host_port == ("superlink.cccmr.example.org", 8000)
    assert site.private_key == Path("/etc/cccmr/keys/anzhen")


def test_a_bad_manifest_row_is_a_warning_naming_its_line(site_dir, certs_dir, keys_dir, tls_server) -> None:
    manifest = site_dir / "data" / "manifest.csv"
    sax = site_dir / "data" / "s001" / "sax"
    manifest.write_text(manifest.read_text() + "s002,2,,s001/4ch,s001/sax,\n" + f"s003,0,,s001/4ch,{sax},\n")
    config = _write_config(site_dir, certs_dir, keys_dir, tls_server)
    checks = {c.name: c for c in run_checks(load_site_config(config))}
    assert checks["manifest"].status == WARN and checks["dry ingest"].status == OK
    assert "1 subjects" in checks["manifest"].detail and "2 rows rejected" in checks["manifest"].detail
    assert "manifest.csv line 3: label '2'" in checks["manifest"].detail
    assert "allow-outside-paths" in checks["manifest"].fix
    config.write_text(config.read_text() + "allow-outside-paths = true\n")
    checks = {c.name: c for c in run_checks(load_site_config(config))}
    assert "2 subjects" in checks["manifest"].detail and "1 row rejected" in checks["manifest"].detail


def _stand_in(kind, header, arrays):
    raise AssertionError("cccmr doctor only pings the worker")


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`worker(fingerprint)`: a real site worker's socket and serving loop, in a thread, with a stand-in handler."""
    started: list[tuple[socket.socket, threading.Event, threading.Thread]] = []

    def start(fingerprint: str) -> Path:
        path = tmp_path / "run" / "worker.sock"
        server = open_socket(path)
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(server, _stand_in),
                                  kwargs={"fingerprint": fingerprint, "stop": stop, "poll_s": 0.05})  # fmt: skip
        thread.start()
        started.append((server, stop, thread))
        return path

    yield start
    for server, stop, thread in started:
        stop.set()
        thread.join(5)
        server.close()


def _worker_check(site_dir: Path, certs_dir: Path, keys_dir: Path, path: Path, timeout: int = 2) -> Check:
    config = _write_config(site_dir, certs_dir, keys_dir, 1, **{"worker-socket": str(path), "connect-timeout": timeout})
    (check,) = check_worker(load_site_config(config))
    assert check.name == "site worker"
    return check


def test_a_worker_running_this_code_passes(site_dir, certs_dir, keys_dir, tls_server, worker, capsys) -> None:
    path = worker(app_fingerprint())
    config = _write_config(site_dir, certs_dir, keys_dir, tls_server, **{"worker-socket": str(path)})
    checks = {c.name: c for c in run_checks(load_site_config(config))}
    assert [n for n, c in checks.items() if c.status != OK] == []
    assert f"pid {os.getpid()}" in checks["site worker"].detail and app_fingerprint() in checks["site worker"].detail
    assert main(["doctor", "--site-config", str(config)]) == 0
    assert "[ OK ] site worker" in capsys.readouterr().out


def test_no_worker_socket_means_no_worker_check(site_dir, certs_dir, keys_dir) -> None:
    config = _write_config(site_dir, certs_dir, keys_dir, 1)
    assert check_worker(load_site_config(config)) == []


def test_a_worker_that_is_down_fails_with_how_to_start_it(site_dir, certs_dir, keys_dir, capsys) -> None:
    path = site_dir / "run" / "worker.sock"
    check = _worker_check(site_dir, certs_dir, keys_dir, path)
    assert check.status == FAIL and "not running" in check.detail
    assert "systemctl start cccmr-site-worker@alpha" in check.fix and "up -d site-worker" in check.fix
    open_socket(path).close()  # a worker that died: its socket file stayed behind
    check = _worker_check(site_dir, certs_dir, keys_dir, path)
    assert check.status == FAIL and "cannot connect" in check.detail
    assert "systemctl start cccmr-site-worker@alpha" in check.fix
    config = _write_config(site_dir, certs_dir, keys_dir, 1, **{"worker-socket": str(path)})
    assert main(["doctor", "--site-config", str(config)]) == 1
    assert "[FAIL] site worker" in capsys.readouterr().out


def test_a_worker_running_other_code_fails_naming_both_fingerprints(site_dir, certs_dir, keys_dir, worker) -> None:
    check = _worker_check(site_dir, certs_dir, keys_dir, worker("0.0.9+0123456789abcdef"))
    assert check.status == FAIL
    assert check.detail == (
        f"app fingerprint mismatch: this installation is {app_fingerprint()}, the worker runs 0.0.9+0123456789abcdef"
    )
    assert "systemctl restart cccmr-site-worker@alpha" in check.fix


@pytest.mark.parametrize("mode", [0o660, 0o606, 0o640])
def test_a_socket_open_to_other_users_fails(site_dir, certs_dir, keys_dir, worker, mode) -> None:
    path = worker(app_fingerprint())
    path.chmod(mode)
    check = _worker_check(site_dir, certs_dir, keys_dir, path)
    assert check.status == FAIL and f"mode {mode:o}" in check.detail and "chmod 600" in check.fix


def test_a_busy_worker_is_a_warning_not_a_failure(site_dir, certs_dir, keys_dir, tmp_path) -> None:
    """The worker serves one message at a time: a ping during a round's training waits in its backlog."""
    path = tmp_path / "busy" / "worker.sock"
    server = open_socket(path)  # listening, never answering
    try:
        check = _worker_check(site_dir, certs_dir, keys_dir, path, timeout=1)
    finally:
        server.close()
    assert check.status == WARN and "no reply within 1 s" in check.detail and "between rounds" in check.fix


def test_a_file_in_place_of_the_socket_fails(site_dir, certs_dir, keys_dir) -> None:
    path = site_dir / "worker.sock"
    path.write_text("not a socket")
    check = _worker_check(site_dir, certs_dir, keys_dir, path)
    assert check.status == FAIL and "is not a socket" in check.detail


def test_example_site_config_worker_socket_parses(tmp_path: Path, deploy_dir: Path) -> None:
    text = (deploy_dir / "site-config.example.toml").read_text()
    assert "\n# worker-socket = " in text  # off by default: the ClientApp trains itself
    path = tmp_path / "site.toml"
    path.write_text(text.replace("\n# worker-socket = ", "\nworker-socket = "))
    assert load_site_config(path).worker_socket == Path("/run/cccmr/anzhen/worker.sock")


TORCH_BROKEN = """
import sys
sys.modules["torch"] = None  # as on a host whose torch install is broken: `import torch` raises ImportError
from cccmr_model.cli import main
sys.exit(main(["doctor", "--site-config", sys.argv[1]]))
"""


def test_doctor_reports_a_broken_torch_instead_of_crashing(site_dir, certs_dir, keys_dir, tls_server) -> None:
    """The command line builds its parser without torch (`cccmr_model/runtime_options.py`), so the doctor gets to
    say what is wrong, check by check, and the checks that need no torch still pass."""
    import subprocess
    import sys

    config = _write_config(site_dir, certs_dir, keys_dir, tls_server)
    done = subprocess.run(
        [sys.executable, "-c", TORCH_BROKEN, str(config)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 0
    assert "[FAIL] torch: torch not importable" in done.stdout
    assert "[ OK ] root certificate" in done.stdout and "[ OK ] superlink reachable" in done.stdout
    assert "NOT ready" in done.stdout


def test_a_check_that_cannot_import_fails_and_the_rest_run(site_dir, certs_dir, keys_dir, monkeypatch) -> None:
    import cccmr_model.doctor as doctor

    def broken(site):
        raise ImportError("libcudart.so.12: cannot open shared object file")

    monkeypatch.setattr(doctor, "check_data", broken)
    checks = {c.name: c for c in run_checks(load_site_config(_write_config(site_dir, certs_dir, keys_dir, 1)))}
    assert checks["dry ingest"].status == FAIL
    assert "could not run: libcudart.so.12" in checks["dry ingest"].detail
    assert checks["cache path"].status == OK  # the checks after it ran
