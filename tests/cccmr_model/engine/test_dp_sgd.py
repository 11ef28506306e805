"""DP-SGD with opacus: per-sample gradients of the whole encoder stack (Swin relative position bias tables
included) on the tiny config, the persisted ledger, the hard budget, and the refusal of phase fim."""

from __future__ import annotations

import json

import pytest
import torch
from opacus import GradSampleModule
from torch.utils.data import default_collate

from benchmarks.support.synthetic import SyntheticCohort
from cccmr_model.config import load_config
from cccmr_model.engine import dp_sgd
from cccmr_model.engine.dp_accounting import PrivacyLedger
from cccmr_model.engine.dp_sgd import EncoderSamples, train_phase_dp
from cccmr_model.errors import CccmrError, ConfigError, TrainingError
from cccmr_model.model import build_model, set_trainable

FAST = ["data.image_size=32", "data.frames=4", "data.min_frames=4", "train.batch_size=2", "train.resample_factor=1"]
DP = ["privacy.dp_sgd.enabled=true", "privacy.dp_sgd.noise_multiplier=1.0", "privacy.dp_sgd.max_grad_norm=1.0"]


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", FAST + DP)


@pytest.fixture(scope="module")
def cohort(config):
    return SyntheticCohort(4, config.data, seed=1)


@pytest.mark.slow
def test_phase1_per_sample_gradients_cover_every_parameter_on_the_tiny_config() -> None:
    """Each sample's gradient from opacus equals the gradient of that sample's loss alone, for every trainable
    parameter of pretrain (three encoders with their relative position bias tables, and the heads)."""
    config = load_config("tiny", DP)
    torch.manual_seed(0)
    model = build_model(config)
    trained = set_trainable(model, "pretrain")
    cohort = SyntheticCohort(3, config.data, seed=2)
    batch = default_collate([cohort[i] for i in range(3)])
    batch["has_lge"] = torch.tensor([True, False, True])
    runner = EncoderSamples(model, cohort, config, torch.device("cpu"))
    private = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    runner.set_modes()
    per_sample, _ = runner.per_sample_losses(batch)
    per_sample.mean().backward()
    grads = {name: p.grad_sample.clone() for name, p in model.named_parameters() if p.requires_grad}
    private._close()
    tables = [n for n in trained if n.endswith("relative_position_bias_table")]
    assert len(tables) == 3 * sum(config.model.encoder.depths)  # one table per block, three encoders
    assert set(grads) == set(trained) and all(g.shape[0] == 3 for g in grads.values())
    for i in (0, 1):  # sample 1 has no LGE: its LGE encoder gradient is zero
        model.zero_grad(set_to_none=True)
        one = {k: v[i : i + 1] for k, v in batch.items()}
        runner.per_sample_losses(one)[0].sum().backward()
        for name in [*tables, "heads.cine_sax.weight", "encoders.cine_4ch.patch_embed.proj.weight"]:
            param = model.get_parameter(name)
            expected = param.grad if param.grad is not None else torch.zeros_like(param)
            torch.testing.assert_close(grads[name][i], expected, rtol=1e-4, atol=1e-6, msg=name)
    assert grads["encoders.lge_sax.layers.0.blocks.0.attn.relative_position_bias_table"][1].abs().max() == 0


@pytest.mark.slow
def test_pretrain_step_under_dp_trains_and_accumulates_epsilon_across_calls(
    config, cohort, tmp_path, monkeypatch
) -> None:
    # The Poisson draws come from OS entropy; with 4 subjects at rate 0.5 both steps draw nobody once in 256 runs
    # (a legitimate noise-only call, and this test then failed). Fixed entropy whose first draws are not empty:
    monkeypatch.setattr(dp_sgd.secrets, "randbits", lambda bits: 1234)
    ledger = tmp_path / "site" / "dp-sgd-accountant.json"
    first = train_phase_dp(None, "pretrain", cohort, config, epochs=1, ledger_path=ledger, seed=0)
    eps1 = first.metrics["dp_epsilon"]
    assert eps1 > 0 and first.metrics["dp_stopped"] == 0 and first.metrics["dp_steps"] == 2
    assert first.num_examples > 0
    assert set(first.state) == set(build_model(config).state_dict())
    second = train_phase_dp(first.state, "pretrain", cohort, config, epochs=1, ledger_path=ledger, seed=1)
    eps2 = second.metrics["dp_epsilon"]
    assert eps2 > eps1  # read back from disk, as a restarted site process would
    assert json.loads(ledger.read_text())["history"] == [[1.0, 0.5, 2], [1.0, 0.5, 2]]
    assert PrivacyLedger.load(ledger).epsilon(config.privacy.dp_sgd.delta) == pytest.approx(eps2)
    fusion = train_phase_dp(second.state, "fusion", cohort, config, epochs=1, ledger_path=ledger, seed=2)
    assert fusion.metrics["dp_epsilon"] > eps2  # both phases spend the same site's budget
    changed = [k for k in fusion.state if not torch.equal(fusion.state[k], second.state[k])]
    assert changed and all(k.startswith("fusion.") for k in changed)


@pytest.mark.slow
def test_budget_stops_training_and_says_so(config, cohort, tmp_path) -> None:
    ledger = tmp_path / "ledger.json"
    one_call = PrivacyLedger(ledger, []).epsilon(1e-5, (1.0, 0.5, 2))
    budget = load_config("tiny", [*FAST, *DP, f"privacy.dp_sgd.epsilon_budget={one_call * 1.2}"])
    first = train_phase_dp(None, "pretrain", cohort, budget, epochs=1, ledger_path=ledger)
    assert first.metrics["dp_stopped"] == 0
    second = train_phase_dp(first.state, "pretrain", cohort, budget, epochs=1, ledger_path=ledger)
    assert second.metrics["dp_stopped"] == 1 and second.metrics["dp_steps"] < 2
    assert second.metrics["dp_epsilon"] <= one_call * 1.2
    third = train_phase_dp(second.state, "pretrain", cohort, budget, epochs=1, ledger_path=ledger)
    assert third.num_examples == 0 and third.metrics["dp_steps"] == 0 and third.metrics["dp_stopped"] == 1
    assert all(torch.equal(third.state[k], second.state[k]) for k in second.state)


def test_fim_is_refused_with_the_reason(config, cohort, tmp_path) -> None:
    with pytest.raises(ConfigError, match="not a sum of per-sample terms"):
        train_phase_dp(None, "fim", cohort, config, epochs=1, ledger_path=tmp_path / "l.json")
    assert not (tmp_path / "l.json").exists()


def test_unreadable_ledger_stops_instead_of_starting_from_zero(tmp_path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text("{not json")
    with pytest.raises(CccmrError, match="privacy already spent"):
        PrivacyLedger.load(path)


class NaNCohort(SyntheticCohort):
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        item["cine_4ch"] = torch.full_like(item["cine_4ch"], float("nan"))
        return item


def test_non_finite_loss_under_dp_stops_with_one_line(config, tmp_path) -> None:
    cohort = NaNCohort(4, config.data, seed=1)
    ledger = tmp_path / "dp-sgd-accountant.json"
    with pytest.raises(TrainingError, match=r"phase pretrain \(DP-SGD, 2 steps\): non-finite training loss") as info:
        train_phase_dp(None, "pretrain", cohort, config, epochs=1, ledger_path=ledger, seed=0)
    assert "\n" not in str(info.value)
