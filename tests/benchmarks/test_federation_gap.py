"""The federation-gap benchmark's own FedAvg: the weighted mean of the sites' phase groups, scaled by the server
step, with each round's schedule window and seed as the server sends them; and its variant names."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest
import torch

import cccmr_model.engine
from benchmarks import federation_gap
from cccmr_model.config import load_config


@dataclass
class FakeResult:
    state: dict
    num_examples: int


def test_fedavg_is_the_weighted_mean_scaled_by_the_server_step(monkeypatch) -> None:
    calls = []

    def fake_train_phase(state, phase, data, config, *, epochs, lr_window, seed):
        calls.append((data["name"], epochs, lr_window, seed))
        trained = {k: v + data["step"] if k.startswith("encoders.") else v for k, v in state.items()}
        return FakeResult(trained, data["n"])

    monkeypatch.setattr(cccmr_model.engine, "train_phase", fake_train_phase)
    config = load_config("tiny", ["seed=7"])
    start = {"encoders.w": torch.zeros(3), "fusion.w": torch.ones(2)}  # fusion: not a pretraining group
    sites = [{"name": "a", "step": 1.0, "n": 10}, {"name": "b", "step": 4.0, "n": 30}]
    mean_step = (10 * 1.0 + 30 * 4.0) / 40  # 3.25 per round
    for server_lr in (1.0, 2.0):
        calls.clear()
        out = federation_gap.fedavg(start, sites, config, rounds=2, local_epochs=3, server_lr=server_lr)
        torch.testing.assert_close(out["encoders.w"], torch.full((3,), 2 * server_lr * mean_step))
        torch.testing.assert_close(out["fusion.w"], torch.ones(2))
    assert calls == [("a", 3, (0.0, 0.5), 7), ("b", 3, (0.0, 0.5), 7), ("a", 3, (0.5, 1.0), 8), ("b", 3, (0.5, 1.0), 8)]
    momentum = federation_gap.fedavg(start, sites, config, rounds=2, local_epochs=3, server_lr=1.0, momentum=0.5)
    torch.testing.assert_close(momentum["encoders.w"], torch.full((3,), 2.5 * mean_step))  # m, then m + 0.5 m


def test_variant_names_are_a_base_and_modifiers() -> None:
    Variant = federation_gap.Variant
    assert federation_gap.parse_variant("fedavg") == Variant("fedavg")
    assert federation_gap.parse_variant("fedavg-srvlr1.5") == Variant("fedavg", server_lr=1.5)
    assert federation_gap.parse_variant("fedavg-lr3") == Variant("fedavg", lr_factor=3.0)
    assert federation_gap.parse_variant("fedavg-mom0.5-wu0") == Variant("fedavg", momentum=0.5, warmup_steps=0)
    assert federation_gap.parse_variant("central-bs16") == Variant("central", batch_size=16)
    assert federation_gap.parse_variant("sliced-15x1") == Variant("sliced", rounds=15, local_epochs=1)
    assert federation_gap.parse_variant("central-8x3") == Variant("central", rounds=8, local_epochs=3)
    assert federation_gap.variant_name("fedavg-srvlr2-bs4") == "fedavg-srvlr2-bs4"
    for bad in ("fedavg-srvlr0", "fedavg-lrx", "median", "central-srvlr2", "fedavg-bs0", "fedavg-0x3"):
        with pytest.raises(argparse.ArgumentTypeError, match="unknown variant"):
            federation_gap.variant_name(bad)


def test_render_reports_the_paired_difference_to_central() -> None:
    row = {"cine_4ch": 0.9, "cine_sax": 0.8, "lge_sax": 0.95, "seconds": 10.0}
    worse = {"cine_4ch": 0.85, "cine_sax": 0.8, "lge_sax": 0.9, "seconds": 12.0}
    text = federation_gap.render({0: {"central": row, "fedavg": worse}, 1: {"central": row, "fedavg": row}},
                                 ["central", "fedavg"])  # fmt: skip
    assert "| fedavg | 0.875 ± 0.025 (0.850, 0.900) |" in text
    assert "-0.025 / +0.000 / -0.025 | 11 |" in text
