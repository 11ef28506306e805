"""The shift-robustness benchmark's image changes do what their names say, on images whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import shift_robustness as sr


def _disc(radius: float = 0.5, frames: int = 8) -> torch.Tensor:
    """A bright centred disc on a dark background, (S=2, T, 64, 64), z-scored like a cached cine."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = ((xx**2 + yy**2) < radius**2).float()
    return sr.zscored(image.expand(2, frames, 64, 64).clone())


@pytest.mark.parametrize("name", [n for n in sr.SHIFTS if n != "none"])
def test_every_shift_keeps_the_shape_is_zscored_again_and_changes_the_image(name: str) -> None:
    x = _disc() + 0.05 * torch.randn(2, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    x = sr.zscored(x)
    y = sr.SHIFTS[name](x, np.random.default_rng(0))
    assert y.shape == x.shape
    assert float(y.mean()) == pytest.approx(0.0, abs=1e-4) and float(y.std()) == pytest.approx(1.0, abs=1e-3)
    assert not torch.allclose(y, x, atol=1e-3)


def test_zoom_above_one_enlarges_the_heart_and_below_one_shrinks_it() -> None:
    x = _disc()
    area = float((x > 0).float().mean())
    larger = float((sr.warp(zoom=1.15)(x, np.random.default_rng(0)) > 0).float().mean())
    smaller = float((sr.warp(zoom=0.85)(x, np.random.default_rng(0)) > 0).float().mean())
    assert larger == pytest.approx(area * 1.15**2, rel=0.08)
    assert smaller == pytest.approx(area * 0.85**2, rel=0.08)


def test_the_offset_moves_the_disc_centre_by_its_fraction_of_the_side() -> None:
    y = sr.warp(offset_fraction=0.1)(_disc(0.3), np.random.default_rng(3))[0, 0] > 0  # H, W
    rows, cols = torch.nonzero(y, as_tuple=True)
    moved = float(torch.hypot(rows.float().mean() - 31.5, cols.float().mean() - 31.5))
    assert moved == pytest.approx(6.4, abs=0.7)  # 10 % of 64 px


def test_a_cycle_warp_of_zero_is_the_identity_and_keeps_the_first_frame() -> None:
    x = sr.zscored(torch.arange(8, dtype=torch.float32).view(1, 8, 1, 1).expand(1, 8, 4, 4).clone())
    assert torch.allclose(sr.time_warp(0.0)(x, np.random.default_rng(0)), x, atol=1e-6)
    warped = sr.time_warp(0.6)(x, np.random.default_rng(0))
    values = warped[0, :, 0, 0]
    assert int(values.argmin()) == 0  # phase 0 stays the first frame
    assert bool((values[1:5] > x[0, 1:5, 0, 0]).all())  # u + 0.6 sin(2 pi u) / 2 pi runs ahead in the first half


def test_shifted_dataset_changes_only_the_cine_and_is_the_same_on_every_read() -> None:
    base = [{"cine_4ch": _disc(), "cine_sax": _disc(0.4), "lge_sax": torch.ones(2, 64, 64), "label": torch.tensor(1)}]
    data = sr.ShiftedDataset(base, sr.SHIFTS["noise: +0.3 sd"], seed=5)
    first, second = data[0], data[0]
    assert torch.equal(first["cine_sax"], second["cine_sax"])
    assert not torch.equal(first["cine_sax"], base[0]["cine_sax"])
    assert torch.equal(first["lge_sax"], base[0]["lge_sax"]) and int(first["label"]) == 1


def test_the_table_reports_each_runs_mean_drop_from_the_unchanged_images() -> None:
    results = {
        "fim-ua": {0: dict.fromkeys(sr.SHIFTS, 0.9) | {"none": 0.95}, 1: dict.fromkeys(sr.SHIFTS, 0.8) | {"none": 0.85}}
    }
    text = sr.table(results)
    assert "| none | 0.950 / 0.850, 0.900 (+0.000) |" in text
    assert "| rotation: 25 deg | 0.900 / 0.800, 0.850 (-0.050) |" in text
