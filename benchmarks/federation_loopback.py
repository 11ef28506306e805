"""What the federation adds to local training, measured on loopback with the real daemons at the default model size.

A consortium CA, site keys, `flower-superlink` with TLS and SuperNode authentication, two `flower-supernode`
daemons (anzhen, lanzhou) and `flwr run` of a short three-phase schedule, all started with the deploy/ scripts a
hospital uses, on 127.0.0.1. The model is the default one (three Swin-T encoders: the full payload of every
round); the images are 64 x 64 x 8 frames so that a 2-core CPU trains about a minute per round (the payload does
not depend on the image size). Both sites train at the same time, one thread each.

With `--worker` each site also runs its warm `cccmr site-worker` (one thread), and its SuperNode forwards every
message to it (`start-supernode.sh --worker-socket`); `--wire fp32|bf16|int8` sets `federation.wire` (default:
`configs/default.yaml`'s, bf16); `--link-mbit R` rate-limits the SuperLink's Fleet port on loopback with `tc` (HTB,
needs CAP_NET_ADMIN): 2 x R in each direction, shared by the two sites, so each site gets about R while both
transfer (they do, in step).

Per round, from the history: the round's wall time (from one round's start to the next, so aggregation,
evaluation and the checkpoint count), the slower site's pure training time (`train_seconds`: the engine's epoch
loops), the overhead (round time minus that) and where it goes: ClientApp process start-up, set-up inside the
handler, the training exchange beyond the sites' handlers (transfer and polling), evaluation (inside the train
message, `evaluate_seconds`, or its own exchange after the last round) and the server's own work. Also the bytes
per site down and up, and the round modelled at 100 Mbit/s and 1 Gbit/s per site link: the measured round plus
those bytes' time at that rate (loopback's own transfer time stays in, so the model errs long). Then the fixed
cost of a training round (its mean overhead) and the local training time at which it is 10 %. Also the ServerApp
process's resident memory, sampled every second.

Standalone: `python -m benchmarks.federation_loopback [--quick] [--subjects N] [--local-epochs N] [--worker]
[--wire fp32|bf16|int8] [--link-mbit R] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.support.site_worker import wait_for_socket, write_site_file
from cccmr_model.config import load_config
from cccmr_model.demo.flower import app_dir, offline_env
from cccmr_model.processes import descendants, free_port, listening, stop, wait_for
from cccmr_model.run_folder import bytes_per_site, history_path, read_history, release_dir
from cccmr_model.site.data import SiteSettings, prepare_site

SITES = ("anzhen", "lanzhou")
LINK_RATES_MBIT = (100, 1000)  # per site link, for the modelled round times
SMALL_IMAGES = ["data.image_size=64", "data.field_of_view_mm=223", "data.frames=8", "data.min_frames=8"]


def run(
    quick: bool,
    subjects: int | None = None,
    local_epochs: int | None = None,
    keep: Path | None = None,
    superlink_state: str = "file",
    worker: bool = False,
    wire: str | None = None,
    link_mbit: float | None = None,
) -> list[dict]:
    subjects = subjects or (8 if quick else 20)
    local_epochs = local_epochs or (1 if quick else 2)
    rounds = 1 if quick else 2
    overrides = [
        *SMALL_IMAGES,
        "train.num_workers=0",
        "train.device=cpu",
        "federation.min_sites=2",
        "federation.evaluate_every=2",  # rounds whose train replies carry an evaluation, and rounds without
        "federation.round_timeout_s=1800",
        f"federation.phases.pretrain.rounds={rounds}",
        f"federation.phases.pretrain.local_epochs={local_epochs}",
        f"federation.phases.fim.rounds={rounds}",
        f"federation.phases.fim.local_epochs={local_epochs}",
        "federation.phases.fusion.rounds=1",
        "federation.phases.fusion.local_epochs=5",
    ]
    if wire is not None:
        overrides.append(f"federation.wire={wire}")
    wire = load_config("default", overrides).federation.wire
    tmp = Path(tempfile.mkdtemp(prefix="cccmr-fl-", dir="/tmp"))
    try:
        rows = _measure(tmp, subjects, overrides, superlink_state, worker, link_mbit)
        setup = {"worker": worker, "wire": wire, "link_mbit": link_mbit, "superlink_state": superlink_state}
        return [{**row, **setup} for row in rows]
    finally:
        if keep is not None:
            shutil.copytree(tmp, keep, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(
    tmp: Path, subjects: int, overrides: list[str], superlink_state: str, worker: bool, link_mbit: float | None
) -> list[dict]:
    repo, venv_bin = app_dir(), Path(sys.executable).parent
    env = offline_env(tmp / "flwr-home", tmp / "ray")
    daemon_env = {k: v for k, v in env.items() if k != "FLWR_HOME"}
    config = load_config("default", overrides)
    cohort = tmp / "cohort"
    _check([venv_bin / "cccmr", "phantom", "--out", cohort, "--subjects", subjects, "--size", "tiny", "--quiet"], env)
    for site in SITES:  # ingestion happens once, on a site's first message: do it before timing rounds
        prepare_site(SiteSettings(site, cohort / site, tmp / f"cache-{site}", "cpu"), config)

    certs, keys, deploy = tmp / "certs", tmp / "keys", repo / "deploy"
    _check(["bash", deploy / "make-ca.sh", "--out", certs, "127.0.0.1", "localhost"], daemon_env)
    for site in SITES:
        _check(["bash", deploy / "make-site-keys.sh", "--out", keys, site], daemon_env)
    started: list[subprocess.Popen] = []
    rss = _RssSampler()
    limited = False
    try:
        port = free_port()
        link = _start(started, tmp / "superlink.out", daemon_env,
                      ["bash", deploy / "start-superlink.sh", "--certs", certs, "--state-dir", tmp / "link",
                       "--host", "127.0.0.1", "--port", port, "--state", superlink_state,
                       *(["--sites-dir", keys] if superlink_state == "memory" else [])])  # fmt: skip
        wait_for(lambda: listening(port) or link.poll() is not None, 60, "the SuperLink to listen")
        address = f"127.0.0.1:{port}"
        if link_mbit is not None:
            limited = _limit_port(port, 2 * link_mbit)
        if superlink_state == "memory":  # a SuperNode that knocks before its key is registered is refused for good
            out = tmp / "superlink.out"
            wait_for(lambda: out.read_text().count(" registered") >= len(SITES), 60, "the sites' registration")
        for site in SITES:
            if superlink_state == "file":  # in memory, start-superlink.sh registers the keys in --sites-dir
                _check(["bash", deploy / "register-site.sh", "--superlink", address, "--root-cert",
                        certs / "ca.crt", site, keys / f"{site}.pub"], daemon_env)  # fmt: skip
            socket = tmp / site / "worker.sock"
            if worker:
                _start_worker(started, tmp, site, cohort / site, socket, address, certs, keys, daemon_env)
            _start(started, tmp / f"{site}.out", daemon_env,
                   ["bash", deploy / "start-supernode.sh", "--superlink", address, "--site", site,
                    "--data-path", cohort / site, "--cache-path", tmp / f"cache-{site}", "--root-cert",
                    certs / "ca.crt", "--key", keys / site, "--port", free_port(),
                    "--state-dir", tmp / site, *(["--worker-socket", socket] if worker else [])])  # fmt: skip
        log = tmp / "link" / "logs" / "superlink.log"
        wait_for(lambda: log.exists() and log.read_text().count("Activated node_id") >= 2, 60, "both SuperNodes")

        (tmp / "flwr-home").mkdir(parents=True, exist_ok=True)
        (tmp / "flwr-home" / "config.toml").write_text(
            f'[superlink]\ndefault = "cccmr"\n\n[superlink.cccmr]\naddress = "{address}"\n'
            f'root-certificates = "{certs / "ca.crt"}"\n'
        )
        run_dir = tmp / "run"
        run_config = f'config-path="configs/default.yaml" config-overrides="{";".join(overrides)}" run-dir="{run_dir}"'
        rss.start(link.pid)
        start = time.monotonic()
        result = subprocess.run(
            [venv_bin / "flwr", "run", ".", "cccmr", "--stream", "--run-config", run_config],
            cwd=repo, env=env, capture_output=True, text=True, timeout=3600, check=False,
        )  # fmt: skip
        total = time.monotonic() - start
        rss.stop()
        history = read_history(history_path(run_dir))
        if result.returncode != 0 or not release_dir(run_dir).is_dir():
            output = (result.stdout + result.stderr)[-3000:]
            raise RuntimeError(f"flwr run failed (exit {result.returncode}):\n{output}")
    finally:
        rss.stop()
        for process in reversed(started):
            stop(process)
        if limited:
            _unlimit()
    rounds = round_rows(history, subjects)
    return [
        *rounds,
        *fixed_cost_rows(rounds),
        _row("ServerApp resident memory, first / peak", rss.first_mb, "MB", peak_mb=round(rss.peak_mb, 1),
             last_mb=round(rss.last_mb, 1), samples=len(rss.samples)),
        _row("whole run (flwr run . to the release)", total, "s", rounds=len(history)),
    ]  # fmt: skip


def round_rows(history: list[dict], subjects: int) -> list[dict]:
    """One row per round: wall time against the slower site's pure training time, the overhead's parts, the bytes
    per site and the round modelled on 100 Mbit/s and 1 Gbit/s site links."""
    rows = []
    for index, rnd in enumerate(history):
        nxt = history[index + 1]["started_at"] if index + 1 < len(history) else None
        wall = (nxt - rnd["started_at"]) if nxt is not None else rnd["round_time_s"]
        sites = rnd["train"].values()
        train = max(s["train_seconds"] for s in sites)
        task = max(s["task_seconds"] for s in sites)
        startup = max(s.get("startup_seconds", 0.0) for s in sites)
        site_evaluate = max(s.get("evaluate_seconds", 0.0) for s in sites)  # evaluation inside the train message
        setup = max(s["task_seconds"] - s["train_seconds"] - s.get("evaluate_seconds", 0.0) for s in sites)
        exchange = rnd["exchange_s"]
        overhead = wall - train
        down, up = bytes_per_site(rnd)
        evaluates = site_evaluate > 0 or "evaluate" in exchange
        modelled = {}
        for mbit in LINK_RATES_MBIT:
            link_s = (down + up) * 8 / (mbit * 1e6)
            modelled[f"round_at_{mbit}mbit_s"] = round(wall + link_s, 1)
            modelled[f"overhead_at_{mbit}mbit_pct"] = round(100 * (wall + link_s - train) / train, 1)
        rows.append(_row(
            f"round {rnd['round']} ({rnd['phase']}{' + eval' if evaluates else ''}) overhead",
            100 * overhead / train, "% of training",
            round_s=round(wall, 1), train_s=round(train, 1), overhead_s=round(overhead, 1),
            startup_s=round(startup, 1), handler_setup_s=round(setup, 1),
            transfer_and_polling_s=round(exchange["train"] - task - startup, 1),
            evaluate_s=round(site_evaluate + exchange.get("evaluate", 0.0), 1),
            server_s=round(wall - exchange["train"] - exchange.get("evaluate", 0.0), 1),
            mb_sent_per_site=round(down / 1e6, 1), mb_received_per_site=round(up / 1e6, 1),
            phase=rnd["phase"], evaluates=evaluates, subjects_per_site=subjects, **modelled,
        ))  # fmt: skip
    return rows


def fixed_cost_rows(rounds: list[dict]) -> list[dict]:
    """The mean overhead of the training rounds (pretrain and FIM; fusion trains for under a second) with and
    without an evaluation, and the local training time per round at which that overhead is 10 % (15 % with an
    evaluation, the targets)."""
    rows = []
    for evaluates, target in ((False, 10.0), (True, 15.0)):
        chosen = [r for r in rounds if r["phase"] != "fusion" and r["evaluates"] == evaluates]
        if not chosen:
            continue
        fixed = sum(r["overhead_s"] for r in chosen) / len(chosen)
        kind = "with an evaluation" if evaluates else "training only"
        rows.append(_row(f"fixed cost per round, {kind}", fixed, "s", rounds=[r["metric"] for r in chosen],
                         mean_overhead_pct=round(sum(r["value"] for r in chosen) / len(chosen), 1),
                         training_for_target_s=round(100 * fixed / target, 1), target_pct=target))  # fmt: skip
    return rows


def _start_worker(
    started: list,
    tmp: Path,
    site: str,
    data: Path,
    socket: Path,
    address: str,
    certs: Path,
    keys: Path,
    env: dict[str, str],
) -> None:
    """Start `cccmr site-worker` for `site` (the env's one thread) and wait for its socket."""
    socket.parent.mkdir(parents=True, exist_ok=True)
    site_file = write_site_file(tmp / f"{site}-site.toml", site=site, data=data, cache=tmp / f"cache-{site}",
                                socket=socket, superlink=address, root_certificate=certs / "ca.crt",
                                private_key=keys / site)  # fmt: skip
    log = tmp / f"{site}-worker.out"
    cccmr = Path(sys.executable).parent / "cccmr"
    wait_for_socket(_start(started, log, env, [cccmr, "site-worker", "--site-config", site_file]), socket, log)


def _limit_port(port: int, mbit: float) -> bool:
    """HTB on loopback: traffic to and from `port` at `mbit` Mbit/s in each direction, the rest unlimited."""
    rate = f"{mbit:g}mbit"
    commands = [
        "qdisc add dev lo root handle 1: htb default 30",
        "class add dev lo parent 1: classid 1:30 htb rate 100gbit",
        f"class add dev lo parent 1: classid 1:10 htb rate {rate} ceil {rate}",
        f"class add dev lo parent 1: classid 1:20 htb rate {rate} ceil {rate}",
        f"filter add dev lo parent 1: protocol ip prio 1 u32 match ip dport {port} 0xffff flowid 1:10",
        f"filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport {port} 0xffff flowid 1:20",
    ]
    for command in commands:
        result = subprocess.run(["tc", *command.split()], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            _unlimit()
            raise RuntimeError(f"tc {command}: {result.stderr.strip()} (needs CAP_NET_ADMIN)")
    return True


def _unlimit() -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, check=False)


class _RssSampler:
    """Samples the resident memory of the SuperLink's ServerApp process (a descendant running flwr-serverapp)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, root_pid: int) -> None:
        self._thread = threading.Thread(target=self._loop, args=(root_pid,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, root_pid: int) -> None:
        while not self._stop.wait(1.0):
            for pid in descendants(root_pid):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"flwr-serverapp" in cmd:
                        status = Path(f"/proc/{pid}/status").read_text()
                        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
                        self.samples.append(kb / 1024)
                except (OSError, StopIteration):
                    continue

    first_mb = property(lambda self: self.samples[0] if self.samples else float("nan"))
    last_mb = property(lambda self: self.samples[-1] if self.samples else float("nan"))
    peak_mb = property(lambda self: max(self.samples) if self.samples else float("nan"))


def _start(started: list, log: Path, env: dict[str, str], args: list) -> subprocess.Popen:
    process = subprocess.Popen([str(a) for a in args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=app_dir())  # fmt: skip
    started.append(process)
    return process


def _check(args: list, env: dict[str, str]) -> None:
    result = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))}: {result.stdout}{result.stderr}")


def _row(metric: str, value: float, unit: str, **extra: object) -> dict:
    return {"benchmark": "federation_loopback", "metric": metric, "value": value, "unit": unit,
            "config": "default model, 64x64x8 images", **extra}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round per phase, 8 subjects, 1 local epoch")
    parser.add_argument("--subjects", type=int, help="subjects per site (default 20; quick 8)")
    parser.add_argument("--local-epochs", type=int, help="local epochs per round (default 2; quick 1)")
    parser.add_argument(
        "--superlink-state",
        choices=("file", "memory"),
        default="file",
        help="the SuperLink's state and object store: SQLite file (default) or memory",
    )
    parser.add_argument("--worker", action="store_true", help="a warm cccmr site-worker per site")
    parser.add_argument("--wire", choices=("fp32", "bf16", "int8"), help="federation.wire (default: the config's)")
    parser.add_argument("--link-mbit", type=float, help="rate-limit each site's link on loopback (tc)")
    parser.add_argument("--keep", type=Path, help="copy the run folder (logs, history, release) here")
    args = parser.parse_args()
    rows = run(args.quick, args.subjects, args.local_epochs, args.keep, args.superlink_state, args.worker, args.wire,
               args.link_mbit)  # fmt: skip
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
