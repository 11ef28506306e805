"""train_phase / evaluate_model on a tiny synthetic cohort at the tiny config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.support.synthetic import SyntheticCohort
from cccmr_model.config import load_config
from cccmr_model.engine import evaluate_model, train_phase
from cccmr_model.engine import train as train_module
from cccmr_model.errors import CccmrError, TrainingError
from cccmr_model.model import build_model


@pytest.fixture(scope="module")
def pretrained(config, cohort):
    return train_phase(None, "pretrain", cohort, config, epochs=1, seed=0)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretrain_returns_full_state_and_counts_samples(config, cohort, pretrained) -> None:
    model_keys = set(build_model(config).state_dict())
    assert set(pretrained.state) == model_keys
    assert pretrained.num_examples == len(cohort)  # one epoch, resample factor 1: samples, not batches
    assert np.isfinite(pretrained.metrics["loss"])
    assert {"cls:cine_4ch", "cls:cine_sax", "cls:lge_sax", "lr", "samples_per_s"} <= set(pretrained.metrics)


def test_fusion_leaves_frozen_parameters_unchanged(config, cohort, pretrained) -> None:
    result = train_phase(pretrained.state, "fusion", cohort, config, epochs=2, seed=0)
    before, after = pretrained.state, result.state
    frozen = [k for k in before if not k.startswith("fusion.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("fusion."))
    assert result.num_examples == 2 * len(cohort)


def test_fim_trains_sigmas_and_encoders_not_fusion(fast, config, cohort, pretrained) -> None:
    cosine = load_config("tiny", [*fast, "train.warmup_steps=0"])  # the lr check below reads the cosine alone
    result = train_phase(pretrained.state, "fim", cohort, cosine, epochs=1, seed=0, lr_window=(0.0, 0.5))
    changed = {k for k in result.state if not torch.equal(result.state[k], pretrained.state[k])}
    assert "uncertainty.log_sigma" in changed
    assert any(k.startswith("encoders.lge_sax.") for k in changed)
    assert not any(k.startswith("fusion.") for k in changed)
    assert result.metrics["lr"] > 0.5 * config.train.lr  # a window of the first half stays above the midpoint


def test_the_sigmas_learning_rate_scale_moves_them_further(fast, config, cohort, pretrained) -> None:
    """`train.uncertainty_lr_scale` multiplies the sigmas' scheduled learning rate (AdamW: steps of about lr)."""
    moved = {}
    for scale in (1.0, 30.0):
        scaled = load_config("tiny", [*fast, f"train.uncertainty_lr_scale={scale}"])
        result = train_phase(pretrained.state, "fim", cohort, scaled, epochs=1, seed=0)
        moved[scale] = (result.state["uncertainty.log_sigma"] - pretrained.state["uncertainty.log_sigma"]).abs()
    assert moved[30.0].max() > 10 * moved[1.0].max() > 0


@pytest.mark.parametrize(("phase", "epochs"), [("pretrain", 2), ("fusion", 3)])
def test_resumed_run_equals_uninterrupted_run(fast, config, cohort, pretrained, tmp_path, monkeypatch, phase, epochs):
    start = pretrained.state if phase == "fusion" else None
    whole = train_phase(start, phase, cohort, config, epochs=epochs, seed=3)

    real_save = train_module.save_checkpoint

    class CrashError(Exception):
        pass

    def save_then_crash(path, payload):
        real_save(path, payload)
        raise CrashError

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(CrashError):  # dies right after writing the first epoch's checkpoint
        train_phase(start, phase, cohort, config, epochs=epochs, seed=3, checkpoint_dir=tmp_path)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    torch.manual_seed(12345)  # whatever happened to the global RNG in between must not matter
    resumed = train_phase(start, phase, cohort, config, epochs=epochs, seed=3, checkpoint_dir=tmp_path)
    assert _equal(whole.state, resumed.state)
    assert resumed.num_examples == whole.num_examples
    done = train_phase(start, phase, cohort, config, epochs=epochs, seed=3, checkpoint_dir=tmp_path)
    assert _equal(done.state, whole.state)  # a finished checkpoint is returned as is
    with pytest.raises(CccmrError, match="another run"):
        train_phase(start, phase, cohort, config, epochs=epochs, seed=4, checkpoint_dir=tmp_path)
    other = load_config("tiny", [*fast, "train.lr=1e-4"])
    with pytest.raises(CccmrError, match="another run"):  # changed settings never resume a stale checkpoint
        train_phase(start, phase, cohort, other, epochs=epochs, seed=3, checkpoint_dir=tmp_path)


def test_seed_changes_the_result(config, cohort, pretrained) -> None:
    a = train_phase(pretrained.state, "fusion", cohort, config, epochs=1, seed=0)
    b = train_phase(pretrained.state, "fusion", cohort, config, epochs=1, seed=1)
    assert not _equal(a.state, b.state)


def test_loading_checks_every_key(config, cohort, pretrained) -> None:
    broken = dict(pretrained.state)
    broken.pop("fusion.0.weight")
    with pytest.raises(CccmrError, match="missing"):
        train_phase(broken, "fusion", cohort, config, epochs=1)
    extra = {**pretrained.state, "encoders.cine_4ch.bogus": torch.zeros(1)}
    with pytest.raises(CccmrError, match="unexpected"):
        train_phase(extra, "fusion", cohort, config, epochs=1)


def test_evaluate_fused_and_single_sequence(config, cohort, pretrained) -> None:
    result = evaluate_model(pretrained.state, cohort, config, "cpu")
    assert result.scores.shape == (len(cohort), 2)
    assert np.allclose(result.scores.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(result.labels, cohort.labels)
    assert np.isfinite(result.loss)
    head = evaluate_model(pretrained.state, cohort, config, "cpu", source="cine_sax")
    assert not np.allclose(head.scores, result.scores)
    cine_only = {k: v for k, v in pretrained.state.items() if k.startswith(("encoders.cine", "fusion."))}
    again = evaluate_model(cine_only, cohort, config, "cpu")  # a release ships only the inference path
    assert np.allclose(again.scores, result.scores)


def test_subtyping_uses_patients_with_a_subtype(fast, cohort) -> None:
    config = load_config("tiny", [*fast, "task=subtyping"])
    result = train_phase(None, "fusion", cohort, config, epochs=1, seed=0)
    evaluated = evaluate_model(result.state, cohort, config, "cpu")
    assert evaluated.scores.shape == ((cohort.subtypes >= 0).sum(), 5)
    assert np.array_equal(evaluated.labels, cohort.subtypes[cohort.subtypes >= 0])


class PoisonedCohort(SyntheticCohort):
    """A cohort whose cines turn NaN once `poisoned` is set (as after a bad series slipped into the cache)."""

    poisoned = False

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        if self.poisoned:
            item["cine_sax"] = torch.full_like(item["cine_sax"], float("nan"))
        return item


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(config, tmp_path, monkeypatch) -> None:
    cohort = PoisonedCohort(8, config.data, seed=1)
    real_save = train_module.save_checkpoint

    def save_then_poison(path, payload):
        real_save(path, payload)
        cohort.poisoned = True  # epoch 2 onwards sees NaN inputs

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_poison)
    with pytest.raises(TrainingError, match=r"phase pretrain epoch 2/3: non-finite training loss") as info:
        train_phase(None, "pretrain", cohort, config, epochs=3, seed=0, checkpoint_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "pretrain-last.pt (epoch 1) kept" in message
    kept = torch.load(tmp_path / "pretrain-last.pt", weights_only=False)
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    with pytest.raises(TrainingError, match=r"epoch 1/1: .*none, no epoch finished"):
        train_phase(None, "pretrain", cohort, config, epochs=1, seed=0, checkpoint_dir=tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "pretrain-last.pt").exists()


@pytest.mark.parametrize("phase", ["pretrain", "fusion"])
def test_a_phase_batch_size_sets_the_steps_per_epoch(config, cohort, phase) -> None:
    """`train.phases.<phase>.batch_size` (the demo's federated pretraining uses 4) replaces `train.batch_size`."""
    import dataclasses
    from contextlib import nullcontext

    labels = np.array([int(cohort[i]["label"]) for i in range(len(cohort))])
    model = build_model(config)
    steps = {}
    for batch in (2, 4):
        phases = {**config.train.phases, phase: dataclasses.replace(config.train.phases[phase], batch_size=batch)}
        changed = dataclasses.replace(config, train=dataclasses.replace(config.train, phases=phases))
        runner = train_module._make_runner(phase, model, cohort, labels, changed, torch.device("cpu"), 0, nullcontext)
        steps[batch] = runner.steps_per_epoch()
    assert steps[2] == 2 * steps[4] == len(cohort) * config.train.resample_factor // 2
