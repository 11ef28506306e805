"""The auxiliary-target experiment: the area curve it regresses, and a patch that trains its layers with the
pretraining groups and leaves the model as it was afterwards."""

from __future__ import annotations

import torch

from benchmarks import auxiliary_target
from cccmr_model.config import load_config
from cccmr_model.model import PHASE_GROUPS, build_model, phase_state


def test_area_curve_is_the_bright_fraction_of_the_central_disc_per_frame() -> None:
    size, radius = 64, 0.3  # disc radius 19.2 px
    rows = torch.arange(size).view(-1, 1) - (size - 1) / 2
    cols = torch.arange(size).view(1, -1) - (size - 1) / 2
    inner = (rows**2 + cols**2 <= 9.6**2).float()  # half the disc's radius: a quarter of its area
    clip = torch.full((1, 3, 3, size, size), -1.0)  # B, C, T, H, W
    clip[0, :, 0] = 2.0 * inner  # frame 0: the inner disc is blood
    clip[0, :, 1] = 2.0  # frame 1: everything is bright, also outside the disc
    curve = auxiliary_target.area_curve(clip, radius)  # B, T
    assert curve.shape == (1, 3)
    assert abs(curve[0, 0].item() - 0.25) < 0.03
    assert curve[0, 1].item() == 1.0
    assert curve[0, 2].item() == 0.0


def test_the_patch_adds_trained_layers_only_while_it_lasts() -> None:
    config = load_config("tiny")
    before = dict(PHASE_GROUPS)
    with auxiliary_target.auxiliary_target_patch(0.5, config.data.frames, shape=False):
        model = build_model(config)
        pretrain = phase_state(model.state_dict(), "pretrain")
        assert {"aux.cine_sax.weight", "aux.cine_4ch.weight"} <= set(pretrain)
        assert model.aux["cine_sax"].out_features == config.data.frames
    assert dict(PHASE_GROUPS) == before
    assert not any(key.startswith("aux.") for key in build_model(config).state_dict())


def test_the_auxiliary_term_is_zero_for_a_perfect_prediction_and_positive_otherwise() -> None:
    clip = torch.randn(4, 1, 8, 32, 32)
    target = auxiliary_target.area_curve(clip, 0.4)
    target = (target - target.mean()) / (target.std() + 1e-3)
    layer = torch.nn.Linear(8, 8)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(8))
        layer.bias.zero_()
    exact = auxiliary_target.auxiliary_term(target, clip, layer, 0.4, shape=False)
    assert exact.item() < 1e-10
    assert auxiliary_target.auxiliary_term(torch.zeros(4, 8), clip, layer, 0.4, shape=False).item() > 0.5
