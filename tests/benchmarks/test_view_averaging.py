"""benchmarks/view_averaging.py: the views move, turn and mirror as named, and the sets average the right views."""

from __future__ import annotations

import pytest
import torch

from benchmarks import view_averaging as va
from benchmarks.shift_robustness import SHIFTS


def _disc(centre: tuple[float, float] = (0.0, 0.0), radius: float = 0.3) -> torch.Tensor:
    """A bright disc at `centre` (x, y in [-1, 1]) on a dark background, (S=2, T=3, 64, 64)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = (((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) < radius**2).float()
    return image.expand(2, 3, 64, 64).clone()


def _centre(x: torch.Tensor) -> tuple[float, float]:
    """The intensity-weighted centre (column, row) of the first image, in pixels."""
    image = x[0, 0]
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return float((image * cols).sum() / image.sum()), float((image * rows).sum() / image.sum())


def test_as_is_is_the_identity_and_every_view_keeps_the_shape() -> None:
    x = _disc((0.2, -0.1))
    assert torch.equal(va.VIEWS["as is"](x), x)
    for name, apply in va.VIEWS.items():
        y = apply(x)
        assert y.shape == x.shape, name
        if name != "as is":
            assert not torch.allclose(y, x), name


def test_a_mirrored_view_is_its_unmirrored_view_flipped_left_right() -> None:
    x = _disc((0.3, 0.1))
    for name in va.VIEWS:
        if name.endswith(", mirrored"):
            plain = va.VIEWS[name.removesuffix(", mirrored")](x)
            assert torch.equal(va.VIEWS[name](x), torch.flip(plain, dims=(-1,))), name


def test_the_moves_shift_the_disc_by_trainings_largest_shift_in_their_direction() -> None:
    x0, y0 = _centre(_disc())
    step = va.MAX_SHIFT * 64  # 2.3 px
    for name, (dx, dy) in {"right": (step, 0), "left": (-step, 0), "down": (0, step), "up": (0, -step)}.items():
        x, y = _centre(va.VIEWS[name](_disc()))
        assert (x - x0, y - y0) == pytest.approx((dx, dy), abs=0.05), name


def test_every_set_names_known_views_and_starts_from_the_image_as_is() -> None:
    for name, views in va.VIEW_SETS.items():
        assert views[0] == "as is" and set(views) <= set(va.VIEWS), name
    assert va.VIEW_SETS["all 14"] == list(va.VIEWS) and len(va.VIEWS) == 14


def test_viewed_dataset_changes_only_the_cine() -> None:
    base = [{"cine_4ch": _disc(), "cine_sax": _disc(), "lge_sax": torch.ones(2, 64, 64), "label": torch.tensor(1)}]
    sample = va.ViewedDataset(base, va.VIEWS["right"])[0]
    assert not torch.equal(sample["cine_sax"], base[0]["cine_sax"])
    assert torch.equal(sample["lge_sax"], base[0]["lge_sax"]) and int(sample["label"]) == 1


def _scores(labels: list[int], good: list[str]) -> dict[str, list]:
    """Views in `good` rank every positive above every negative; the others rank them exactly backwards."""
    right = [0.2 + 0.6 * label for label in labels]
    wrong = [0.8 - 0.6 * label for label in labels]
    return {name: (right if name in good else wrong) for name in va.VIEWS} | {"labels": labels}


def test_set_aucs_average_probabilities_over_exactly_the_sets_views() -> None:
    labels = [0, 1, 0, 1, 1, 0]
    aucs = va.set_aucs(_scores(labels, good=["as is", "as is, mirrored"]))
    assert aucs["one view"] == 1.0 and aucs["+ mirror"] == 1.0
    assert aucs["4 shifts"] == 0.0  # four of five views wrong: their mean ranks backwards
    assert aucs["all 14"] == 0.0


def test_the_table_has_a_row_per_shift_and_the_mean_and_worst_over_the_changed_ones() -> None:
    labels = [0, 1, 0, 1]
    per_shift = {shift: _scores(labels, good=list(va.VIEWS)) for shift in SHIFTS}
    per_shift["rotation: 25 deg"] = _scores(labels, good=[])
    text = va.table({0: per_shift, 1: per_shift})
    assert "mean over seeds 0, 1" in text
    assert text.count("\n| ") == 1 + len(SHIFTS) + 2  # the header, the shifts, mean and worst
    cells = len(va.VIEW_SETS)
    assert "| none | " + " | ".join(["1.000"] * cells) + " |" in text
    assert "| rotation: 25 deg | " + " | ".join(["0.000"] * cells) + " |" in text
    mean = f"{(len(SHIFTS) - 2) / (len(SHIFTS) - 1):.3f}"
    assert "| mean of the shifts | " + " | ".join([mean] * cells) + " |" in text
    assert "| worst shift | " + " | ".join(["0.000"] * cells) + " |" in text
