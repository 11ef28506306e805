"""The ground truth can be measured back from the rendered images, and the subtypes carry their signatures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from cccmr_model.phantom.anatomy import ground_truth, state
from cccmr_model.phantom.cohort import LGE_PHASE, SIZES, render_subject, sample_layout, sample_protocol
from cccmr_model.phantom.sites import site_profile
from cccmr_model.phantom.subjects import sample_heart


def _subject(subtype: str | None, seed: int, lge: bool | None = None):
    for attempt in range(50):
        rng = np.random.default_rng([seed, attempt])
        heart, _ = sample_heart(rng, subtype)
        if lge is None or bool(heart.scars) == lge:
            break
    layout = sample_layout(rng, heart)
    protocol = sample_protocol(rng, site_profile("anzhen"), SIZES["small"], heart)
    # a dense stack (no gap) from base to apex, so that summing slice areas measures the volume; the small preset's
    # 8-10 slices cover a long heart only with wide gaps
    coverage = heart.lv_length + heart.apex_wall + 10.0
    slices = int(np.ceil(coverage / protocol.sax_thickness)) + 1
    protocol = dataclasses.replace(protocol, has_lge=True, frames=20, sax_gap=0.0, sax_slices=slices)
    return heart, layout, protocol, rng


def _blood_volumes(series: dict, layout, heart) -> np.ndarray:
    """LV blood-pool volume per frame (mL): bright pixels connected to the LV axis, holes filled, x spacing.

    As a reader would, it excludes pixels above the valve plane of that frame (atrial blood in basal slices).
    """
    cine = series["cine_sax"]
    planes = cine["planes"]
    spacing = abs((planes[1].origin - planes[0].origin) @ planes[0].normal)
    frames = cine["array"].shape[1]
    bases = [state(heart, f / frames).base for f in range(frames)]
    volumes = np.zeros(frames)
    for plane, stack in zip(planes, cine["array"], strict=True):
        h = layout.to_heart(plane.points())
        near_axis = np.hypot(h[..., 0], h[..., 1]) < heart.lv_radius + 4.0
        seed = np.unravel_index(np.argmin(np.hypot(h[..., 0], h[..., 1])), h.shape[:2])
        for f, image in enumerate(stack):
            labels, _ = ndimage.label((image > 0.635) & near_axis & (h[..., 2] > bases[f]))
            if labels[seed] == 0:
                continue
            pool = ndimage.binary_fill_holes(labels == labels[seed])
            volumes[f] += pool.sum() * plane.spacing**2 * spacing / 1000.0
    return volumes


@pytest.mark.parametrize(("subtype", "seed"), [(None, 1), ("DCM", 2), ("HCM", 3), ("NDLVC", 4)])
def test_ejection_fraction_measured_from_images(subtype: str | None, seed: int) -> None:
    heart, layout, protocol, rng = _subject(subtype, seed)
    series = render_subject(heart, layout, protocol, rng, SIZES["small"], noise=False)
    truth = ground_truth(heart, protocol.frames, LGE_PHASE)
    volumes = _blood_volumes(series, layout, heart)
    measured_ef = (volumes.max() - volumes.min()) / volumes.max()
    if subtype == "HCM":  # a slit-like systolic cavity in a thick wall loses partial-volume pixels to the threshold,
        # most at the apex, so the measured end-systolic volume is low and the EF high (0.82-0.90 for 0.75-0.77)
        assert truth["ef"] - 0.03 < measured_ef < truth["ef"] + 0.15
    else:
        assert measured_ef == pytest.approx(truth["ef"], abs=0.07)
    assert volumes.max() == pytest.approx(truth["edv_ml"], rel=0.2)
    assert abs(int(volumes.argmin()) - truth["es_frame"]) <= 1


def _bright_lge_pixels(subtype: str | None, seed: int, lge: bool | None) -> tuple[int, dict]:
    heart, layout, protocol, rng = _subject(subtype, seed, lge=lge)
    series = render_subject(heart, layout, protocol, rng, SIZES["small"], noise=False)
    # noise-free, only enhanced myocardium is brighter than fat (0.5) and blood (0.42) on LGE
    return int((series["lge_sax"]["array"] > 0.7).sum()), ground_truth(heart, protocol.frames, LGE_PHASE)


def test_ndlvc_obvious_on_lge_subtle_on_cine() -> None:
    bright, truth = _bright_lge_pixels("NDLVC", 7, lge=True)
    healthy_bright, _ = _bright_lge_pixels(None, 7, lge=None)
    assert truth["lge_burden"] > 0.04 and bright > 40 and healthy_bright == 0
    assert truth["ef"] > 0.4 and truth["edv_ml"] < 190  # non-dilated, at most mildly impaired in cine


@pytest.mark.parametrize("subtype", ["HCM", "DCM", "RCM", "ARVC"])
def test_subtype_signatures(subtype: str) -> None:
    normal = [ground_truth(sample_heart(np.random.default_rng([9, i]), None)[0], 20, LGE_PHASE) for i in range(8)]
    hearts = [sample_heart(np.random.default_rng([11, i]), subtype)[0] for i in range(8)]
    truths = [ground_truth(h, 20, LGE_PHASE) for h in hearts]
    mean = {k: np.mean([t[k] for t in normal]) for k in ("edv_ml", "ef", "max_wall_thickness_mm")}
    if subtype == "HCM":
        assert np.mean([t["max_wall_thickness_mm"] for t in truths]) > mean["max_wall_thickness_mm"] + 5
    if subtype == "DCM":
        assert np.mean([t["edv_ml"] for t in truths]) > 1.4 * mean["edv_ml"]
        assert np.mean([t["ef"] for t in truths]) < mean["ef"] - 0.2
    if subtype == "RCM":
        assert np.mean([h.la_radius for h in hearts]) > 1.25 * 24.0
    if subtype == "ARVC":
        assert np.mean([h.rv_width for h in hearts]) > 1.3 * 24.0 and all(h.rv_bulge for h in hearts)
