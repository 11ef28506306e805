"""Nothing leaves a site but parameters and aggregate metrics (issue 9, point 3).

A whole federation runs in this process: the real ServerApp pieces (initial model, `PhaseFedAvg`, central DP
wrapper) and the real ClientApp object with its mods (ingestion, split, engine, DP-SGD, update clipping), two sites
of DICOM series whose headers carry distinctive PatientName / PatientID strings. Only the network is replaced by a
direct call that keeps every reply. Each reply is serialised the way Flower sends it (every inflatable object it
holds, deflated to bytes). The test asserts that train replies hold exactly the parameter groups of their phase,
evaluation replies no arrays, every metric key is on an allow-list, and that the planted strings, the subject IDs,
and raw pixel bytes appear neither in the serialised replies nor in any log line or stderr output (the
sites' data paths: not in the replies; a site may log its own).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.support.inprocess_grid import InProcessGrid, node_context
from cccmr_model.config import load_config
from cccmr_model.model import FIM_TERMS, PHASE_GROUPS, build_model, phase_state
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, SeriesTags, write_series
from cccmr_model.release.files import is_release_key
from cccmr_model.run_folder import read_history
from cccmr_model.sequences import SEQUENCES
from cccmr_model.wire import decode, split_evaluation
from client import app as client_app
from server.app import initial_state
from server.privacy import with_central_dp
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = ("anzhen", "lanzhou")
HEADER = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"
TRAIN_METRICS = {"num-examples", "loss", "lr", "epochs", "samples_per_s", "cls:fusion"}
TRAIN_METRICS |= {"train_seconds", "task_seconds", "startup_seconds", "evaluate_seconds"}
TRAIN_METRICS |= {f"cls:{s}" for s in SEQUENCES} | set(FIM_TERMS) | {f"sigma:{t}" for t in FIM_TERMS}
TRAIN_METRICS |= {"dp_epsilon", "dp_delta", "dp_steps", "dp_stopped"}
# Per-head training accuracy, AUC and constant-prediction flags: aggregates over the site's training subjects.
TRAIN_METRICS |= {f"{kind}:{head}" for kind in ("acc", "auc", "constant") for head in (*SEQUENCES, "fusion")}
EVAL_METRICS = {"num-examples", "loss", "confusion"}
# Per-head validation accuracy, AUC, loss and count: aggregates over the site's validation subjects.
EVAL_METRICS |= {f"{kind}:{seq}" for kind in ("acc", "auc", "loss", "examples") for seq in SEQUENCES}


def planted(site: str, index: int) -> tuple[str, str, str]:
    """(subject ID, PatientName, PatientID) of one subject: strings no code would produce by chance."""
    return f"SUBJ{site[:3].upper()}Q{index:02d}", f"Zyxwvut^Planted{site}{index}", f"PIDX9K{site}{index:02d}"


def write_planted_site(root: Path, site: str, subjects: int, seed: int) -> Path:
    """A site folder (manifest + classic DICOM series, one folder per subject ID) with planted identities."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:24j, -1:1:24j]
    blob = np.exp(-(xx**2 + yy**2) * 4)  # R, C
    rows = []
    for index in range(subjects):
        subject, name, pid = planted(site, index)
        label = index % 2
        for folder, slices, frames in (("cine4ch", 1, 8), ("cinesax", 3, 8), ("lge", 6, 1)):
            array = (rng.gamma(2.0, 60.0, (slices, frames, 24, 24)) + 200.0 * label * blob).astype(np.float32)
            geometry = Geometry.stack([-40.0, 0.0, 30.0], (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), slices, 8.0)
            trigger = np.tile(np.arange(frames) * 50.0, (slices, 1)) if frames > 1 else None
            tags = SeriesTags(patient_name=name, patient_id=pid, series_description=folder,
                              inversion_time=300.0 if folder == "lge" else None)  # fmt: skip
            write_series(root / subject / folder, array, Sampling(geometry, (9.0, 9.0), 8.0, trigger), tags=tags)
        rows.append(f"{subject},{label},{'HCM' if label else ''},{subject}/cine4ch,{subject}/cinesax,{subject}/lge")
    (root / "manifest.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return root


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture(scope="module")
def planted_sites(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    for seed, site in enumerate(SITES):
        write_planted_site(root / site, site, 4, seed)
    return root


def wire_bytes(msg: Message) -> bytes:
    """Everything Flower transmits for a message: each object of its tree, deflated."""
    return b"".join(obj.deflate() for obj in get_all_nested_objects(msg).values())


def secrets_of(root: Path) -> tuple[list[str], list[bytes]]:
    """The planted strings, subject IDs and paths of the sites, and raw pixel bytes of DICOM slices and the cache."""
    strings = [str(root)]
    for site in SITES:
        strings += [s for i in range(4) for s in planted(site, i)]
    pixels = []
    for path in sorted(root.glob("*/SUBJ*/cinesax/*.dcm"))[:6]:
        raw = pydicom.dcmread(path).PixelData
        pixels.append(raw[len(raw) // 2 : len(raw) // 2 + 48])
    for path in sorted(root.glob("cache/*/subjects/*/cine_sax.npy"))[:2]:
        cached = np.load(path)  # S, F, H, W as stored, and as the float32 the model reads
        row = cached[1, 4, cached.shape[2] // 2, cached.shape[3] // 4 : cached.shape[3] // 4 + 32]
        pixels += [row.tobytes(), row.astype(np.float32).tobytes()]
    return strings, pixels


DP = ["privacy.central_dp.enabled=true", "privacy.central_dp.clipping_norm=5.0", "privacy.dp_sgd.enabled=true"]
PRIVACY = {"plain": [], "dp": [*DP, "federation.phases.fim.rounds=0"]}


@pytest.mark.parametrize("privacy", ["plain", "dp"])
def test_replies_and_logs_hold_only_parameters_and_aggregate_metrics(privacy, tmp_path, planted_sites, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    sets = ["train.resample_factor=1", "federation.min_sites=2", *PRIVACY[privacy]]
    sets += [f"federation.phases.{p}.rounds=1" for p in PHASE_GROUPS if f"federation.phases.{p}.rounds=0" not in sets]
    config = load_config("tiny", sets)
    nodes = {
        node: (client_app.app, node_context(node, {"site": site, "data-path": str(planted_sites / site),
                                                   "cache-path": str(planted_sites / "cache" / site)}))
        for node, site in enumerate(SITES, start=1)
    }  # fmt: skip
    start = initial_state(config)
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, PHASE_GROUPS), start,
                           config=config, run_dir=tmp_path / "run",
                           eval_keys=[k for k in start if is_release_key(k)])  # fmt: skip
    grid = InProcessGrid(nodes, keep_replies=True)  # the ClientApp object: handlers and mods
    runner = with_central_dp(strategy, config)
    runner.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=strategy.remaining_rounds(),
                 timeout=60)  # fmt: skip

    rounds = read_history(tmp_path / "run" / "history.jsonl")
    phases = [p for p in PHASE_GROUPS if config.federation.phases[p].rounds]
    assert [r["phase"] for r in rounds] == phases
    assert all(r["sites_replied"] == list(SITES) and not r["sites_failed"] for r in rounds), rounds
    model_state = build_model(config).state_dict()
    for site, kind, reply in grid.replies:
        assert not reply.has_error(), reply.error
        content = reply.content
        assert dict(content.config_records) == {"site": {"name": site}}
        assert list(content.metric_records) == ["metrics"]
        metrics = content.metric_records["metrics"]
        if kind.startswith("train."):
            phase = kind.split(".", 1)[1]
            assert list(content.array_records) == ["arrays"]
            arrays = decode(content.array_records["arrays"].to_numpy_ndarrays(), site)
            assert set(arrays) == set(phase_state(model_state, phase)), phase
            for key, array in arrays.items():
                assert tuple(array.shape) == tuple(model_state[key].shape), key
            train, evaluation = split_evaluation(dict(metrics))  # a round's evaluation rides the next train reply
            assert set(train) <= TRAIN_METRICS, set(train) - TRAIN_METRICS
            assert all(isinstance(v, int | float) for v in train.values())
            assert set(evaluation) <= EVAL_METRICS, set(evaluation) - EVAL_METRICS
            assert not evaluation or len(evaluation["confusion"]) == config.num_classes**2
            assert ("dp_epsilon" in metrics) == (privacy == "dp")
        else:
            assert kind == "evaluate" and not content.array_records
            assert set(metrics) <= EVAL_METRICS, set(metrics) - EVAL_METRICS
            assert len(metrics["confusion"]) == config.num_classes**2

    strings, pixels = secrets_of(planted_sites)
    assert len(pixels) == 10 and all(len(set(p)) > 8 for p in pixels)  # real, varied pixel bytes were found
    wire = [wire_bytes(reply) for _, _, reply in grid.replies]
    assert len(wire) == 2 * (len(phases) + 1)  # a train reply per site and phase, and the final evaluation
    assert all(b"num-examples" in blob for blob in wire)  # positive controls: metric names and array bytes are
    first_arrays = grid.replies[0][2].content.array_records["arrays"].to_numpy_ndarrays()
    first = next(iter(decode(first_arrays, "r").values())).tobytes()
    assert first[:256] in wire[0]  # in the bytes searched, so the searches below could find a leak
    captured = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records) + captured.out + captured.err
    assert "Aggregated MetricRecord" in logs or "averaged" in logs  # the capture did see the run's logs
    for secret in strings:
        assert not any(secret.encode() in blob for blob in wire), secret
        assert secret == str(planted_sites) or secret not in logs, secret  # a site may log its own data path
    for chunk in pixels:
        assert not any(chunk in blob for blob in wire)
    if privacy == "dp":
        assert all(r["central_dp"]["epsilon"] > 0 for r in rounds)
        assert all(r["train"][s]["dp_epsilon"] > 0 for r in rounds for s in SITES)
