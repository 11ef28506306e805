"""Property test (issue 16, point 7): random malformed training and evaluation replies, mixed with honest ones.

Each round has 1-3 honest sites and at most as many hostile ones (so that the lower median of the claimed
`num-examples` is an honest claim), in a drawn `federation.wire` format (fp32 weights, or bf16 / int8 updates).
Every hostile reply carries at least one defect drawn from the lists below, on top of random junk. Whatever is
drawn: no exception escapes the strategy, the global model is exactly (bf16, int8: up to the rounding of the
updates) the `num-examples`-weighted mean of the honest updates added to the fp32 master, no honest site is blamed,
the evaluation pools the honest sites only, and the release's reports can be computed from it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cccmr_model.config import load_config
from cccmr_model.config.schema import WIRES
from cccmr_model.run_folder import read_history
from cccmr_model.wire import encode
from cccmr_model.wire_codec import decode_model, encode_difference
from server.evaluation import release_reports
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg
from server.validation import EVAL_METRICS, SITE_NAME_PATTERN, TRAIN_METRICS

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
SHAPES = {"encoders.cine_4ch.w": (4, 3), "heads.cine_4ch.w": (2,), "uncertainty.s": (6,), "fusion.w": (3, 2)}
TRAINED = ("encoders.cine_4ch.w", "heads.cine_4ch.w")
SETTINGS = ["federation.phases.pretrain.rounds=1", "evaluation.bootstrap_resamples=20"]
CONFIGS = {wire: load_config("tiny", [*SETTINGS, f"federation.wire={wire}"]) for wire in WIRES}
SHARED = ("error", "silent", "name_taken", "name_bad", "no_metrics")
TRAIN_DEFECTS = ("nan", "shape", "extra_key", "missing_key", "huge", "weight", "metric_list", "metric_nan", "count",
                 "wire", "encoding", *SHARED)  # fmt: skip
EVAL_DEFECTS = ("negative", "sum", "length", "float_counts", "label_range", "labels_off", "scores_length", "loss",
                "score_range", "half_shared", *SHARED)  # fmt: skip
ALLOWED = sorted(TRAIN_METRICS - {"num-examples"})

finite = st.floats(-1e6, 1e6, allow_nan=False)
junk_value = st.one_of(finite, st.integers(-(2**40), 2**40), st.lists(finite, max_size=4))
junk_key = st.text(min_size=1, max_size=12).filter(lambda k: k not in TRAIN_METRICS | EVAL_METRICS)
junk_metrics = st.dictionaries(junk_key, junk_value, max_size=3)
bad_name = st.one_of(
    st.text(max_size=70).filter(lambda s: not SITE_NAME_PATTERN.fullmatch(s)), st.integers(-(2**62), 2**62)
)
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])


def honest_eval(draw, n: int) -> dict:
    """Counts of `n` subjects; with shared scores half the time (labels consistent with the counts)."""
    labels = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    predicted = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    out = {"num-examples": n, "loss": draw(st.floats(0, 5)), "confusion": confusion.ravel().tolist()}
    if draw(st.booleans()):
        out.update(scores=draw(st.lists(st.floats(0, 1), min_size=n, max_size=n)), labels=labels)
    return out


@st.composite
def rounds(draw) -> dict:
    honest = [
        {
            "name": f"site{i}",
            "n": draw(st.integers(2, 8)),
            "step": draw(st.floats(-0.05, 0.05)),
            "metrics": draw(st.dictionaries(st.sampled_from(ALLOWED), finite, max_size=4)),
            "junk": draw(junk_metrics),
            "eval": honest_eval(draw, draw(st.integers(1, 12))),
        }
        for i in range(draw(st.integers(1, 3)))
    ]
    hostile = []
    for i in range(draw(st.integers(0, len(honest)))):
        site = {"name": f"bad{i}", "n": draw(st.integers(2, 8)), "step": draw(st.floats(-0.05, 0.05)), "metrics": {},
                "junk": draw(junk_metrics), "eval": honest_eval(draw, draw(st.integers(1, 12)))}  # fmt: skip
        site["train_defect"], site["eval_defect"] = (
            draw(st.sampled_from(TRAIN_DEFECTS)),
            draw(st.sampled_from(EVAL_DEFECTS)),
        )
        naming = {site["train_defect"], site["eval_defect"]} & {"name_taken", "name_bad"}
        if naming:  # the node answers both stages under that name
            site["train_defect"] = site["eval_defect"] = defect = sorted(naming)[0]
            site["name"] = draw(st.sampled_from([h["name"] for h in honest]) if defect == "name_taken" else bad_name)
        site["draws"] = {
            "index": draw(st.integers(0, 10**6)),
            "huge": draw(st.floats(1e3, 1e30)) * draw(st.sampled_from([-1, 1])),
            "weight": draw(st.integers(100, 2**62)),
            "count": draw(st.sampled_from([0, -3, 4.0, 2**64])),
            "key": draw(st.sampled_from(["num-examples", *ALLOWED])),
            "list": draw(st.lists(finite, min_size=1, max_size=5)),
            "non_finite": draw(non_finite),
            "delta": draw(st.integers(1, 5)) * draw(st.sampled_from([-1, 1])),
            "label": draw(st.sampled_from([-1, 2, 7])),
            "score": draw(st.sampled_from([1.5, -0.1, float("nan")])),
            "wrong_name": draw(st.booleans()),
        }
        hostile.append(site)
    return {"honest": honest, "hostile": hostile, "wire": draw(st.sampled_from(WIRES))}


def train_content(site: dict, msg) -> RecordDict | Exception | None:
    wire = msg.content["config"]["wire"]
    sent = decode_model(msg.content["arrays"].to_numpy_ndarrays(), wire, "test")
    arrays = {k: v + np.float32(site["step"]) for k, v in sent.items() if k.startswith(GROUPS["pretrain"])}
    metrics = {"num-examples": site["n"], **site["metrics"], **site["junk"]}
    defect, d = site.get("train_defect"), site.get("draws", {})
    key = TRAINED[d.get("index", 0) % 2]
    records: dict = {}
    if defect == "nan":
        arrays[key].flat[d["index"] % arrays[key].size] = d["non_finite"]
    elif defect == "shape":
        arrays[key] = np.zeros((*arrays[key].shape, 2), np.float32)
    elif defect == "extra_key":
        arrays["fusion.w"] = np.zeros((3, 2), np.float32)
    elif defect == "missing_key":
        del arrays[key]
    elif defect == "huge":
        arrays[key].flat[d["index"] % arrays[key].size] += np.float32(d["huge"])
    elif defect == "weight":
        metrics["num-examples"] = d["weight"]
    elif defect == "metric_list":
        metrics[d["key"]] = d["list"]
    elif defect == "metric_nan":
        metrics[d["key"]] = d["non_finite"]
    elif defect == "count":
        metrics["num-examples"] = d["count"]
    elif defect == "wire":
        records["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    if defect == "encoding":
        records["arrays"] = ArrayRecord(misencoded(arrays, sent, wire, d["index"]))
    return _content(site, defect, arrays, metrics, {"arrays": ArrayRecord(reply_arrays(arrays, sent, wire)), **records})


def reply_arrays(arrays: dict, sent: dict, wire: str) -> list[np.ndarray]:
    """The reply as client/app.py encodes it: the weights (fp32) or their update against what was sent."""
    if wire == "fp32":
        return encode(arrays)
    same = {k: v - sent[k] if k in sent and sent[k].shape == v.shape else v for k, v in arrays.items()}
    return encode_difference(same, wire)


def misencoded(arrays: dict, sent: dict, wire: str, index: int) -> list[np.ndarray]:
    """A reply not in the round's wire format: the same reply in another format, a value short, a wrong dtype,
    unusable int8 scales, or the manifest alone."""
    good = reply_arrays(arrays, sent, wire)
    other = {"fp32": "bf16", "bf16": "int8", "int8": "bf16"}[wire]
    variants = [
        reply_arrays(arrays, sent, other),
        [*good[:-1], good[-1][:-1]] if wire != "int8" else [good[0], good[1][:-1], good[2]],
        [*good[:-1], -good[-1] - 1] if wire == "int8" else [good[0], good[1].astype(np.float64)],
        good[:1],
    ]
    return variants[index % len(variants)]


def eval_content(site: dict) -> RecordDict | Exception | None:
    metrics = {**site["eval"], **site["junk"]}
    defect, d = site.get("eval_defect"), site.get("draws", {})
    confusion = list(metrics["confusion"])
    n = metrics["num-examples"]
    if defect == "negative":
        confusion[d["index"] % 4] = -abs(d["delta"])
        metrics.update(confusion=confusion, **{"num-examples": max(1, sum(confusion))})
    elif defect == "sum":
        metrics["num-examples"] = n + d["delta"] if n + d["delta"] > 0 else n + abs(d["delta"])
    elif defect == "length":
        metrics["confusion"] = confusion + [0] * 5
    elif defect == "float_counts":
        metrics["confusion"] = [float(c) for c in confusion]
    elif defect == "label_range":
        metrics.update(labels=[d["label"]] * n, scores=[0.5] * n)
    elif defect == "labels_off":  # one label moved to the other class: the counts no longer match
        labels = [0] * confusion[0] + [0] * confusion[1] + [1] * confusion[2] + [1] * confusion[3]
        labels[0] = 1 - labels[0]
        metrics.update(labels=labels, scores=[0.5] * n)
    elif defect == "scores_length":
        labels = [0] * (confusion[0] + confusion[1]) + [1] * (confusion[2] + confusion[3])
        metrics.update(labels=labels, scores=[0.5] * (n + abs(d["delta"])))
    elif defect == "loss":
        metrics["loss"] = d["non_finite"] if d["wrong_name"] else d["list"]
    elif defect == "score_range":
        labels = [0] * (confusion[0] + confusion[1]) + [1] * (confusion[2] + confusion[3])
        metrics.update(labels=labels, scores=[d["score"]] * n)
    elif defect == "half_shared":
        metrics.pop("labels", None)
        metrics["scores"] = [0.5] * n
    return _content(site, defect, None, metrics, {})


def _content(site: dict, defect, arrays, metrics: dict, records: dict) -> RecordDict | Exception | None:
    if defect == "error":
        return RuntimeError("site crashed")
    if defect == "silent":
        return None
    content = RecordDict({"site": ConfigRecord({"name": site["name"]})})
    if arrays is not None:
        content["arrays"] = records["arrays"]
    if defect != "no_metrics":
        content["metrics"] = MetricRecord(metrics)
    elif site["draws"]["wrong_name"]:
        content["metrics"], content["more"] = MetricRecord(metrics), MetricRecord(metrics)  # two records
    return content


def make_site(site: dict):
    return lambda msg: eval_content(site) if msg.metadata.message_type == "evaluate" else train_content(site, msg)


HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]  # `kit`: no state


@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(drawn=rounds())
def test_malformed_replies_never_escape_never_averaged_and_the_round_completes(kit, drawn):
    honest, hostile = drawn["honest"], drawn["hostile"]
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    sites = {i + 1: make_site(s) for i, s in enumerate([*honest, *hostile])}
    config = CONFIGS[drawn["wire"]]
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_rounds(config.federation.phases, GROUPS)[:1]  # the last round: evaluated in its own exchange
        strategy = PhaseFedAvg(plan, {k: v.copy() for k, v in start.items()}, config=config,
                               run_dir=Path(tmp), eval_keys=["fusion.w"])  # fmt: skip
        strategy.expected_sites = len(sites)  # the first round waits for this many nodes
        strategy.start(grid=kit.FakeGrid(sites), initial_arrays=strategy.global_arrays(), num_rounds=1,
                       timeout=5)  # fmt: skip
        strategy.checkpoints.wait()
        (record,) = read_history(strategy.history_path)
    names = sorted(s["name"] for s in honest)
    assert record["sites_replied"] == names
    assert not set(record["sites_failed"]) & set(names), record["sites_failed"]
    assert len(record["sites_failed"]) >= len(hostile)
    weights = np.array([s["n"] for s in honest], dtype=np.float64)
    rounding = max(abs(s["step"]) for s in honest) * 2.0**-7 if drawn["wire"] != "fp32" else 0.0  # bf16, int8
    for key in TRAINED:
        updates = [start[key].astype(np.float64) + np.float32(s["step"]) for s in honest]  # on the fp32 master
        expected = np.tensordot(weights / weights.sum(), np.stack(updates), axes=1)
        np.testing.assert_allclose(strategy.global_state[key], expected, rtol=1e-5, atol=1e-6 + rounding)
    for key in ("uncertainty.s", "fusion.w"):
        np.testing.assert_array_equal(strategy.global_state[key], start[key])
    assert sorted(record["evaluate"]) == names and sorted(strategy.final_evaluation) == names
    assert record["evaluate_global"]["num-examples"] == sum(s["eval"]["num-examples"] for s in honest)
    reports = release_reports(strategy.final_evaluation, config)
    assert sorted(reports["sites"]) == names
