"""The wire comparison's arithmetic: bytes per training round, and each wire against the reference paired by seed."""

from __future__ import annotations

import pytest

from benchmarks.phantom_wire import RELEASE, aggregate, render, round_bytes, run_folder_name


def test_fp32_is_the_ablations_own_release_run():
    assert run_folder_name("fp32") == "fim-ua" and run_folder_name("int8") == "fim-ua-int8"


def test_round_bytes_average_the_training_rounds_per_site():
    history = [
        {"phase": "pretrain", "bytes_sent": 2 * 100e6, "sites_sent": ["a", "b"], "bytes_received": 2 * 50e6,
         "train": {"a": {}, "b": {}}},
        {"phase": "fim", "bytes_sent": 2 * 200e6, "sites_sent": ["a", "b"], "bytes_received": 100e6,
         "train": {"a": {}}},  # one site replied
        {"phase": "fusion", "bytes_sent": 2e3, "sites_sent": ["a", "b"], "bytes_received": 1e3, "train": {"a": {}}},
    ]  # fmt: skip
    assert round_bytes(history) == pytest.approx((150.0, 75.0))


def test_differences_are_paired_by_seed():
    runs = [
        {"seed": 0, "wire": "fp32", "rows": {RELEASE: 0.90}},
        {"seed": 1, "wire": "fp32", "rows": {RELEASE: 0.80}},
        {"seed": 0, "wire": "bf16", "rows": {RELEASE: 0.91}},
        {"seed": 1, "wire": "bf16", "rows": {RELEASE: 0.81}},
    ]
    agg = aggregate(runs, ["fp32", "bf16"])
    diff = agg["rows"][RELEASE]["bf16 − fp32"]
    assert diff["mean"] == pytest.approx(0.01) and diff["sd"] == pytest.approx(0.0, abs=1e-12)  # unpaired SD: 0.07
    assert agg["rows"][RELEASE]["fp32"]["mean"] == pytest.approx(0.85)
    assert "| FIM w U-A (release) | 0.850 ± 0.071 | 0.860 ± 0.071 | +0.010 ± 0.000 |" in render(agg)
