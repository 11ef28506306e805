"""`cccmr demo --quick` end to end in a subprocess: report, releases and figures exist, and no Flower process or
bound port is left, after a normal end and after an interruption (SIGINT while the federation runs)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cccmr_model.processes import listening, processes_with_env
from cccmr_model.release import verify_release

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CCCMR = [sys.executable, "-m", "cccmr_model"]


def demo_processes(out: Path) -> list[int]:
    """Live processes whose environment points FLWR_HOME into this demo's folder (Ray workers included)."""
    return processes_with_env("FLWR_HOME", str(out.resolve() / "flower" / "flwr-home"))


def superlink_port(out: Path) -> int:
    text = (out / "flower" / "flwr-home" / "config.toml").read_text()
    return int(re.search(r'address = "127\.0\.0\.1:(\d+)"', text).group(1))


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_demo_quick_writes_report_releases_and_leaves_nothing_running(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [*CCCMR, "demo", "--quick", "--out", str(out)], capture_output=True, text=True, timeout=600, env=run_env(),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"report:           {out.resolve() / 'report.md'}" in result.stdout
    assert f"release:          {out.resolve() / 'run' / 'release'}" in result.stdout
    assert "[ROUND 1/5]" in result.stderr and "step 5/5" in result.stderr  # progress was visible
    report = (out / "report.md").read_text()
    for name in ("roc", "rounds", "sigma", "tsne", "bytes"):
        figure = out / "figures" / f"{name}.png"
        assert f"](figures/{name}.png)" in report
        assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 10_000
    explained = report.count("](figures/explained/")  # ED and ES overlays of one held-out subject per class
    assert explained == 4
    assert (out / "report.html").read_text().count("<img ") == 5 + explained
    assert (
        "| CC-CMR (federated, LGE-guided FIM) |" in report and "| Baseline (federated, cine only, no FIM) |" in report
    )
    assert verify_release(out / "run" / "release")["mode"] == "federated"
    assert verify_release(out / "baseline" / "release")["mode"] == "federated"
    phases = [line.split('"phase": "')[1].split('"')[0] for line in (out / "run" / "history.jsonl").open()]
    assert phases == ["pretrain", "pretrain", "fim", "fim", "fusion"]
    baseline = [line.split('"phase": "')[1].split('"')[0] for line in (out / "baseline" / "history.jsonl").open()]
    assert baseline == ["pretrain", "pretrain", "fusion"]
    assert "test-" not in (out / "run" / "history.jsonl").read_text()  # no subject IDs left the sites
    assert demo_processes(out) == []
    assert not listening(superlink_port(out))


def _ctrl_c_as_in_a_terminal() -> None:
    """A job started in the background by a non-interactive shell (as a CI runner may start pytest) inherits
    SIGINT ignored, and Python then installs no KeyboardInterrupt handler: give the demo the terminal's SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_interrupted_during_federation_stops_every_process(tmp_path):
    out = tmp_path / "demo"
    process = subprocess.Popen(
        [*CCCMR, "demo", "--quick", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=run_env(), start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip
    try:
        log = out / "flower" / "run.log"
        deadline = time.monotonic() + 300
        while not (log.is_file() and "[ROUND 1/" in log.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, "the federation never reached round 1"
            time.sleep(0.5)
        assert demo_processes(out), "no Flower process seen while the federation runs"
        port = superlink_port(out)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        left = demo_processes(out)
        for pid in left:  # never leave a leak running on the test machine
            os.kill(pid, signal.SIGKILL)
    assert process.returncode == 130, output[-3000:]
    assert "interrupted" in output
    assert left == []
    assert not listening(port)
