from __future__ import annotations

import pytest
import torch

from cccmr_model.config.schema import AugmentConfig
from cccmr_model.engine.augment import augment_sample, augment_volume


def _sample(has_lge: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "cine_4ch": torch.randn(1, 8, 32, 32, generator=g),
        "cine_sax": torch.randn(3, 8, 32, 32, generator=g),
        "lge_sax": torch.randn(6, 32, 32, generator=g) if has_lge else torch.zeros(6, 32, 32),
        "has_lge": torch.tensor(has_lge),
        "label": torch.tensor(1),
        "subtype": torch.tensor(0),
    }


def test_same_seed_same_result_and_shapes_kept() -> None:
    cfg = AugmentConfig()
    a = augment_sample(_sample(), cfg, torch.Generator().manual_seed(5))
    b = augment_sample(_sample(), cfg, torch.Generator().manual_seed(5))
    c = augment_sample(_sample(), cfg, torch.Generator().manual_seed(6))
    for key in ("cine_4ch", "cine_sax", "lge_sax"):
        assert a[key].shape == _sample()[key].shape
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["cine_sax"], c["cine_sax"])
    assert int(a["label"]) == 1


def test_temporal_offset_alone_is_the_same_cyclic_roll_for_every_slice() -> None:
    cfg = AugmentConfig(max_rotation_deg=0.0, max_shift_fraction=0.0, flip_prob=0.0, intensity_jitter=0.0)
    x = torch.arange(3 * 8, dtype=torch.float32).reshape(3, 8, 1, 1).expand(3, 8, 4, 4).clone()
    y = augment_volume(x, cfg, torch.Generator().manual_seed(2), temporal=True)
    shifts = {int(torch.argmax((y[s, :, 0, 0] == x[s, 0, 0, 0]).int())) for s in range(3)}
    assert len(shifts) == 1  # one offset for all slices
    assert torch.equal(torch.sort(y, dim=1).values, torch.sort(x, dim=1).values)  # frames permuted, none lost


def test_flip_alone_mirrors_all_slices_and_absent_lge_stays_zero() -> None:
    cfg = AugmentConfig(
        temporal_offset=False, max_rotation_deg=0.0, max_shift_fraction=0.0, flip_prob=1.0, intensity_jitter=0.0
    )
    s = _sample(has_lge=False)
    out = augment_sample(s, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out["cine_sax"], torch.flip(s["cine_sax"], dims=(-1,)))
    assert torch.count_nonzero(out["lge_sax"]) == 0


def test_small_rotation_keeps_most_of_the_image() -> None:
    cfg = AugmentConfig(
        temporal_offset=False, max_rotation_deg=5.0, max_shift_fraction=0.03, flip_prob=0.0, intensity_jitter=0.0
    )
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    blob = torch.exp(-(xx**2 + yy**2) * 4).expand(1, 8, 32, 32).clone()
    out = augment_volume(blob, cfg, torch.Generator().manual_seed(1), temporal=True)
    assert torch.corrcoef(torch.stack([out.flatten(), blob.flatten()]))[0, 1] > 0.95


def test_cached_grid_equals_torch_affine_grid() -> None:
    import math

    import torch.nn.functional as F

    from cccmr_model.engine.augment import affine_grid_2d

    angle, (dx, dy), (h, w) = 7.0, (1.5, -2.0), (24, 32)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    theta = torch.tensor([[[c, -s, -2 * dx / w], [s, c, -2 * dy / h]]])
    expected = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    assert torch.allclose(affine_grid_2d(angle, (dx, dy), (h, w)), expected, atol=1e-6)


def test_shift_is_a_fraction_of_the_image_side() -> None:
    """The same config moves a 32 px and a 64 px image by the same fraction of its side."""
    cfg = AugmentConfig(
        temporal_offset=False, max_rotation_deg=0.0, max_shift_fraction=0.25, flip_prob=0.0, intensity_jitter=0.0
    )
    moved = {}
    for size in (32, 64):
        image = torch.zeros(1, 1, size, size)
        image[..., size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2] = 1.0
        out = augment_volume(image, cfg, torch.Generator().manual_seed(3), temporal=True)[0, 0]
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        centre = torch.stack([(out * xs).sum(), (out * ys).sum()]) / out.sum()
        moved[size] = (centre - (size - 1) / 2) / size  # fraction of the side
    assert moved[32].abs().max() > 0.02  # it moved
    assert torch.allclose(moved[32], moved[64], atol=0.02)


def test_zoom_enlarges_or_shrinks_a_centred_disc_and_zero_zoom_draws_nothing() -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.25).float().expand(1, 8, 64, 64).clone()  # S=1, T=8
    still = {"temporal_offset": False, "max_rotation_deg": 0.0, "max_shift_fraction": 0.0, "flip_prob": 0.0,
             "intensity_jitter": 0.0}  # fmt: skip
    areas = []
    for seed in range(12):
        out = augment_volume(
            disc, AugmentConfig(max_zoom=0.3, **still), torch.Generator().manual_seed(seed), temporal=True
        )
        areas.append(float((out > 0.5).float().mean() / disc.mean()))
    assert min(areas) < 0.9 and max(areas) > 1.1  # both directions
    assert min(areas) > 1 / 1.3**2 - 0.05 and max(areas) < 1.3**2 + 0.05  # within the drawn range
    # without zoom the draws after it are the same as before the key existed
    a = augment_sample(_sample(), AugmentConfig(), torch.Generator().manual_seed(3))
    b = augment_sample(_sample(), AugmentConfig(max_zoom=0.0), torch.Generator().manual_seed(3))
    assert torch.equal(a["cine_sax"], b["cine_sax"])


def test_lge_geometry_scale_scales_only_the_lge_geometry_and_keeps_every_draw() -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = ((xx**2 + yy**2) < 0.16).float()  # H, W
    sample = {
        "cine_4ch": disc.expand(1, 8, 64, 64).clone(),
        "cine_sax": disc.expand(3, 8, 64, 64).clone(),
        "lge_sax": disc.expand(6, 64, 64).clone(),
        "has_lge": torch.tensor(True),
        "label": torch.tensor(1),
        "subtype": torch.tensor(0),
    }
    geometry = {"max_rotation_deg": 0.0, "max_shift_fraction": 0.2, "max_zoom": 0.0, "flip_prob": 0.0,
                "intensity_jitter": 0.0}  # fmt: skip

    def centroid_x(img: torch.Tensor) -> float:  # img (H, W), in pixels from the centre
        return float((img * torch.arange(64.0)).sum() / img.sum()) - 31.5

    shifts = []
    for seed in range(4):
        out = {
            scale: augment_sample(
                sample, AugmentConfig(lge_geometry_scale=scale, **geometry), torch.Generator().manual_seed(seed)
            )
            for scale in (0.0, 0.5, 1.0)
        }
        for scale in (0.0, 0.5):  # cine draws and results do not depend on the LGE's scale
            assert torch.equal(out[scale]["cine_sax"], out[1.0]["cine_sax"])
            assert torch.equal(out[scale]["cine_4ch"], out[1.0]["cine_4ch"])
        assert torch.equal(out[0.0]["lge_sax"], sample["lge_sax"])  # no geometry at all
        full, half = centroid_x(out[1.0]["lge_sax"][0]), centroid_x(out[0.5]["lge_sax"][0])
        assert abs(half - full / 2) < 0.3  # half the shift
        shifts.append(abs(full))
    assert max(shifts) > 3.0  # the full-scale LGE did move
    # scale 1 is bit-for-bit what the shipped augmentation drew before the key existed: one uniform per parameter
    g = torch.Generator().manual_seed(7)
    ref = augment_sample(_sample(), AugmentConfig(), torch.Generator().manual_seed(7))
    assert torch.equal(augment_sample(_sample(), AugmentConfig(lge_geometry_scale=1.0), g)["lge_sax"], ref["lge_sax"])


def test_contrast_curve_keeps_order_mean_and_spread() -> None:
    from cccmr_model.engine.augment import contrast_curve

    x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    for gamma in (0.6, 1.6):
        y = contrast_curve(x, gamma)
        assert torch.allclose(y.mean(), x.mean(), atol=1e-4) and torch.allclose(y.std(), x.std(), atol=1e-4)
        order = torch.argsort(x.flatten())
        assert bool((y.flatten()[order].diff() >= -1e-5).all())  # monotone: a contrast change, no new structure
        assert not torch.allclose(y, x, atol=1e-2)


def test_gaussian_blur_smooths_and_keeps_flat_images() -> None:
    from cccmr_model.engine.augment import gaussian_blur

    flat = torch.full((2, 4, 16, 16), 3.0)
    assert torch.allclose(gaussian_blur(flat, 1.2), flat)
    spike = torch.zeros(1, 1, 17, 17)
    spike[0, 0, 8, 8] = 1.0
    blurred = gaussian_blur(spike, 1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5) and blurred.max().item() < 0.2


def test_gamma_and_blur_are_drawn_only_when_set() -> None:
    sample = _sample()
    plain = augment_sample(sample, AugmentConfig(), torch.Generator().manual_seed(3))
    again = augment_sample(sample, AugmentConfig(max_gamma=0.0, max_blur_px=0.0), torch.Generator().manual_seed(3))
    assert torch.equal(plain["cine_sax"], again["cine_sax"])  # the earlier draws, bit for bit
    varied = augment_sample(sample, AugmentConfig(max_gamma=0.5, max_blur_px=1.0), torch.Generator().manual_seed(3))
    assert not torch.equal(plain["cine_sax"], varied["cine_sax"])
