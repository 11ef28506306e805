"""The CC-CMR model: parameter groups, FIM losses with missing LGE, cine-only prediction, phase gradients."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cccmr_model.config import load_config
from cccmr_model.losses import focal_loss
from cccmr_model.model import (
    FIM_TERMS,
    PHASE_GROUPS,
    CCCMRModel,
    build_model,
    lge_to_video,
    phase_state,
    set_trainable,
    strip_lge,
)
from cccmr_model.sequences import SEQUENCE_PAIRS, SEQUENCES
from cccmr_model.swin3d import WeightsError

LABELS = torch.tensor([0, 1, 1, 0])


def make_batch(seed: int = 0, has_lge: tuple[bool, ...] = (True, True, True, True)) -> dict[str, torch.Tensor]:
    """4 subjects at the tiny config's size: 64 x 64, 8 frames."""
    generator = torch.Generator().manual_seed(seed)
    lge = torch.randn(4, 6, 64, 64, generator=generator)
    mask = torch.tensor(has_lge)
    return {
        "cine_4ch": torch.randn(4, 1, 8, 64, 64, generator=generator),
        "cine_sax": torch.randn(4, 3, 8, 64, 64, generator=generator),
        "lge_sax": lge * mask[:, None, None, None],  # zeros where the subject has no LGE, as the dataset gives
        "has_lge": mask,
    }


@pytest.fixture(scope="module")
def model() -> CCCMRModel:
    torch.manual_seed(0)
    return build_model(load_config("tiny")).eval()


def test_parameter_names_fall_into_the_agreed_groups(model: CCCMRModel) -> None:
    groups = [f"encoders.{seq}." for seq in SEQUENCES] + [f"heads.{seq}." for seq in SEQUENCES]
    groups += ["uncertainty.", "fusion."]
    names = [name for name, _ in model.named_parameters()]
    assert all(sum(name.startswith(group) for group in groups) == 1 for name in names)
    assert all(any(name.startswith(group) for name in names) for group in groups)
    assert set(model.state_dict()) == set(names)  # no buffers: the state is what a federation sends
    assert model.uncertainty.log_sigma.shape == (6,) and model.uncertainty.names == FIM_TERMS
    assert FIM_TERMS[3:] == tuple(f"fsa:{a}|{b}" for a, b in SEQUENCE_PAIRS)
    no_decay = model.no_weight_decay()
    assert "uncertainty.log_sigma" in no_decay and no_decay <= set(names)
    assert any(name.startswith("encoders.lge_sax.") and "relative_position_bias_table" in name for name in no_decay)


def test_build_model_follows_the_config() -> None:
    config = load_config(
        "tiny",
        ["task=subtyping", "model.fusion_hidden=24", "train.uncertainty_weighting=false", "train.focal_gamma=1.5"],
    )
    built = build_model(config, with_lge=False)
    assert built.num_features == 16 * 2**3  # tiny embed_dim 16, four stages
    assert built.heads["cine_4ch"].out_features == 5
    assert built.fusion[0].in_features == 2 * built.num_features and built.fusion[0].out_features == 24
    assert [type(layer).__name__ for layer in built.fusion] == ["Linear", "GELU", "Dropout", "Linear"]
    assert _first_conv(built.encoders["cine_4ch"]).in_channels == 1
    assert _first_conv(built.encoders["cine_sax"]).in_channels == 3
    assert list(built.uncertainty.parameters()) == [] and built.focal_gamma == 1.5
    assert not any(name.startswith(("uncertainty.",)) for name in built.state_dict())
    assert not built.with_lge and set(built.encoders) == set(built.heads) == {"cine_4ch", "cine_sax"}


def test_grad_checkpointing_from_config_keeps_gradients() -> None:
    torch.manual_seed(0)
    built = build_model(load_config("tiny", ["model.encoder.grad_checkpointing=true"]))
    assert all(stage.grad_checkpointing for encoder in built.encoders.values() for stage in encoder.layers)
    batch = make_batch()
    built.fim_total(built.fim_losses(built(batch), LABELS, batch["has_lge"])).backward()
    assert all(
        parameter.grad is not None for name, parameter in built.named_parameters() if name.startswith("encoders.")
    )


def test_pretrained_encoder_weights_are_loaded_per_sequence(tmp_path: Path) -> None:
    model = build_model(load_config("tiny", ["model.encoder.stem=patch"]))  # published weights: patch stem
    source = tmp_path / "sax_encoder.pt"
    torch.save(model.encoders["cine_sax"].state_dict(), source)
    overrides = [
        "model.encoder.stem=patch",
        *(f"model.encoder.pretrained.{seq}={source}" for seq in ("cine_4ch", "lge_sax")),
    ]
    loaded = build_model(load_config("tiny", overrides))
    for name, value in model.encoders["cine_sax"].state_dict().items():
        assert torch.equal(loaded.encoders["lge_sax"].state_dict()[name], value), name
    gray = loaded.encoders["cine_4ch"].patch_embed.proj.weight  # 3-channel weights summed for the 1-channel input
    assert torch.allclose(gray, model.encoders["cine_sax"].patch_embed.proj.weight.sum(dim=1, keepdim=True))
    unset = loaded.encoders["cine_sax"].patch_embed.proj.weight  # no file for cine_sax: its own random init
    assert not torch.equal(unset, model.encoders["cine_sax"].patch_embed.proj.weight)
    wider = load_config(
        "tiny", ["model.encoder.stem=patch", f"model.encoder.pretrained.cine_sax={source}", "model.encoder.embed_dim=8"]
    )
    with pytest.raises(WeightsError, match="shape"):
        build_model(wider)


def test_forward_returns_features_and_logits_per_sequence(model: CCCMRModel) -> None:
    with torch.no_grad():
        output = model(make_batch())
    assert set(output.features) == set(SEQUENCES) == set(output.logits)
    assert all(feature.shape == (4, model.num_features) for feature in output.features.values())
    assert all(logit.shape == (4, 2) for logit in output.logits.values())
    assert set(model.features(make_batch())) == set(SEQUENCES)


def test_lge_slices_become_time_with_intensity_copied_to_three_channels() -> None:
    lge = torch.randn(2, 6, 8, 8)
    video = lge_to_video(lge)
    assert video.shape == (2, 3, 6, 8, 8)
    assert all(torch.equal(video[:, channel], lge) for channel in range(3))


def test_fim_losses_are_the_focal_and_fsa_terms(model: CCCMRModel) -> None:
    with torch.no_grad():
        output = model(make_batch())
        losses = model.fim_losses(output, LABELS, make_batch()["has_lge"])
    assert tuple(losses) == FIM_TERMS
    for seq in SEQUENCES:
        expected = focal_loss(output.logits[seq], LABELS, gamma=2.0)
        assert losses[f"cls:{seq}"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(value.item() > 0 for value in losses.values())


def test_fim_total_is_the_weighted_sum_of_its_parts(model: CCCMRModel) -> None:
    with torch.no_grad():
        losses = model.fim_losses(model(make_batch()), LABELS, make_batch()["has_lge"])
        model.uncertainty.log_sigma.copy_(torch.linspace(-0.5, 0.5, 6))
        try:
            total = model.fim_total(losses).item()
            sigmas = model.uncertainty.sigmas()
        finally:
            model.uncertainty.log_sigma.zero_()
    expected = sum(losses[k].item() / sigmas[k] ** 2 + math.log(sigmas[k] + 1) for k in FIM_TERMS)
    assert total == pytest.approx(expected, rel=1e-6)


def test_fixed_weight_ablation_total_is_the_plain_sum() -> None:
    torch.manual_seed(0)
    ablation = build_model(load_config("tiny", ["train.uncertainty_weighting=false"])).eval()
    with torch.no_grad():
        losses = ablation.fim_losses(ablation(make_batch()), LABELS, make_batch()["has_lge"])
    assert ablation.fim_total(losses).item() == pytest.approx(sum(v.item() for v in losses.values()), rel=1e-6)
    assert ablation.uncertainty.sigmas() == dict.fromkeys(FIM_TERMS, 1.0)


def test_subjects_without_lge_contribute_only_cine_terms(model: CCCMRModel) -> None:
    has_lge = (True, False, True, True)
    batch = make_batch(has_lge=has_lge)
    other_lge = dict(batch, lge_sax=batch["lge_sax"].clone())
    other_lge["lge_sax"][1] = 5.0  # whatever sits in the LGE slot of a subject without LGE must not matter
    with torch.no_grad():
        output = model(batch)
        losses = model.fim_losses(output, LABELS, batch["has_lge"])
        changed = model.fim_losses(model(other_lge), LABELS, batch["has_lge"])
        rows = batch["has_lge"]
        subset_cls = focal_loss(output.logits["lge_sax"][rows], LABELS[rows]).item()
    assert {k: v.item() for k, v in losses.items()} == pytest.approx({k: v.item() for k, v in changed.items()})
    assert losses["cls:lge_sax"].item() == pytest.approx(subset_cls, rel=1e-6)


def test_lge_terms_are_zero_with_too_few_lge_subjects(model: CCCMRModel) -> None:
    with torch.no_grad():
        full = model.fim_losses(model(make_batch()), LABELS, make_batch()["has_lge"])
        one = model.fim_losses(
            model(make_batch(has_lge=(False, True, False, False))), LABELS, torch.tensor([0, 1, 0, 0])
        )
        none = model.fim_losses(model(make_batch(has_lge=(False,) * 4)), LABELS, torch.zeros(4, dtype=torch.bool))
    lge_fsa = ["fsa:cine_4ch|lge_sax", "fsa:cine_sax|lge_sax"]
    assert one["cls:lge_sax"].item() > 0 and all(one[k].item() == 0.0 for k in lge_fsa)
    assert all(none[k].item() == 0.0 for k in ["cls:lge_sax", *lge_fsa])
    for key in ["cls:cine_4ch", "cls:cine_sax", "fsa:cine_4ch|cine_sax"]:  # cine terms ignore has_lge
        assert none[key].item() == pytest.approx(full[key].item(), rel=1e-6)


def test_predict_runs_without_any_lge_encoder(model: CCCMRModel) -> None:
    batch = make_batch()
    with torch.no_grad():
        reference = model.predict(batch["cine_4ch"], batch["cine_sax"])
    assert reference.shape == (4, 2)
    cine_only = build_model(load_config("tiny"), with_lge=False).eval()
    assert not any("lge_sax" in name for name in cine_only.state_dict())
    cine_only.load_state_dict(strip_lge(model.state_dict()))  # strict: the keys must match exactly
    with torch.no_grad():
        assert torch.allclose(cine_only.predict(batch["cine_4ch"], batch["cine_sax"]), reference, atol=1e-6)
    full = build_model(load_config("tiny")).eval()
    full.load_state_dict(model.state_dict())
    del full.encoders["lge_sax"], full.heads["lge_sax"]
    with torch.no_grad():
        assert torch.allclose(full.predict(batch["cine_4ch"], batch["cine_sax"]), reference, atol=1e-6)


def phase_loss(model: CCCMRModel, phase: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss each training phase minimises (as the engine composes it)."""
    if phase == "fusion":
        return focal_loss(model.predict(batch["cine_4ch"], batch["cine_sax"]), LABELS)
    losses = model.fim_losses(model(batch), LABELS, batch["has_lge"])
    if phase == "pretrain":
        return sum(value for key, value in losses.items() if key.startswith("cls:"))
    return model.fim_total(losses)


@pytest.mark.parametrize("phase", list(PHASE_GROUPS))
def test_gradients_reach_exactly_what_each_phase_trains(model: CCCMRModel, phase: str) -> None:
    batch = make_batch(seed=3)
    try:
        trained = set_trainable(model, phase)
        assert trained == list(phase_state(dict(model.named_parameters()), phase))
        model.zero_grad(set_to_none=True)
        phase_loss(model, phase, batch).backward()
        for name, parameter in model.named_parameters():
            if name in trained:
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
                assert torch.isfinite(parameter.grad).all(), name
            else:
                assert parameter.grad is None, name
    finally:
        model.zero_grad(set_to_none=True)
        model.requires_grad_(True)


def test_phase_state_selects_groups_by_prefix(model: CCCMRModel) -> None:
    state = model.state_dict()
    fusion = phase_state(state, "fusion")
    assert fusion and all(name.startswith("fusion.") for name in fusion)
    fim = phase_state(state, "fim")
    assert set(fim) | set(fusion) == set(state) and not set(fim) & set(fusion)
    assert set(fim) - set(phase_state(state, "pretrain")) == {"uncertainty.log_sigma"}
    with pytest.raises(ValueError, match="unknown phase"):
        phase_state(state, "finetune")


def _first_conv(encoder: torch.nn.Module) -> torch.nn.Conv3d:
    return next(m for m in encoder.patch_embed.modules() if isinstance(m, torch.nn.Conv3d))


def test_weight_decay_spares_norms_biases_position_tables_and_sigmas(model: CCCMRModel) -> None:
    """AdamW's parameter groups: only weight matrices and convolution kernels decay (timm's no_weight_decay)."""
    from cccmr_model.engine.train import make_optimizer

    config = load_config("tiny")
    for param in model.parameters():
        param.requires_grad_(True)
    decay, no_decay, sigmas = make_optimizer(model, config, "fim", torch.device("cpu")).param_groups
    assert decay["weight_decay"] == config.train.weight_decay > 0 and no_decay["weight_decay"] == 0.0
    assert sigmas["weight_decay"] == 0.0 and sigmas["lr_scale"] == config.train.uncertainty_lr_scale
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    spared = {names[id(p)] for p in no_decay["params"]} | {names[id(p)] for p in sigmas["params"]}
    assert {names[id(p)] for p in sigmas["params"]} == {"uncertainty.log_sigma"}
    assert decayed.isdisjoint(spared) and decayed | spared == set(names.values())
    for name in spared:
        assert (
            name.endswith(("bias", "relative_position_bias_table", "log_sigma"))
            or ".norm" in name
            or ("patch_embed.convs" in name)
        ), name
    assert not any(name.endswith(("bias", "relative_position_bias_table")) for name in decayed)
    assert not any("norm" in name for name in decayed)
