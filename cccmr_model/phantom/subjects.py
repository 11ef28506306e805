"""Draw a synthetic subject's heart: healthy variation and the five ESC 2023 cardiomyopathy phenotypes.

Signatures (severity varies; some patients are LGE-negative, so no single sequence is perfect):
- HCM: thick, often asymmetric septum, small hyperdynamic cavity, patchy mid-wall LGE at the RV insertion points.
- DCM: dilated, spherical, thin walls, low EF; mid-wall septal LGE in a minority.
- NDLVC: near-normal size and mildly reduced regional motion (subtle in cine), subepicardial or ring-like LGE
  (obvious in LGE): the case where LGE guidance should help a cine-only model.
- RCM: normal-size ventricles, large atria, restrictive filling, diffuse subendocardial LGE with a dark blood pool.
- ARVC: dilated, hypokinetic RV with a dyskinetic bulge; RV free-wall and LV subepicardial LGE.
"""

from __future__ import annotations

import numpy as np

from cccmr_model.phantom.anatomy import Heart, ScarPatch

# Probability that a patient of each subtype shows LGE.
LGE_POSITIVE: dict[str, float] = {"HCM": 0.65, "DCM": 0.35, "NDLVC": 0.9, "RCM": 0.75, "ARVC": 0.7}
LATERAL = np.pi  # theta of the lateral wall (opposite the septum)
INFERIOR_SIGN = -1.0  # which side of the septum-lateral axis is inferior (y < 0 in heart coordinates)


def _lv_shape(edv_ml: float, sphericity: float) -> tuple[float, float]:
    """Endocardial radius and length (mm) of a half-ellipsoid of volume `edv_ml` and length/radius `sphericity`."""
    radius = (3.0 * edv_ml * 1000.0 / (2.0 * np.pi * sphericity)) ** (1.0 / 3.0)
    return float(radius), float(radius * sphericity)


def sample_heart(rng: np.random.Generator, subtype: str | None) -> tuple[Heart, float]:
    """A heart for a healthy subject (`subtype` None) or a patient; also returns the severity (0..1)."""
    u = rng.uniform
    severity = float(u(0.0, 1.0)) if subtype else 0.0
    base = {
        "edv": float(np.clip(rng.normal(140, 22), 95, 200)),
        "ef": u(0.56, 0.70),
        "sphericity": u(2.9, 3.5),
        "wall": u(7.0, 9.5),
        "septal_extra": u(0.0, 1.2),
        "septal_width": u(0.7, 1.1),
        "rv_width": u(20.0, 28.0),
        "rv_ef": u(0.5, 0.65),
        "la": u(22.0, 26.0),
        "ra": u(21.0, 25.0),
        "hr": float(np.clip(rng.normal(68, 9), 50, 95)),
        "systole": u(0.32, 0.38),
        "early": u(0.6, 0.78),
        "speed": u(0.9, 1.2),
    }
    kw: dict = {}
    scars: list[ScarPatch] = []
    lge = subtype is not None and rng.random() < LGE_POSITIVE[subtype]
    insertion = u(1.0, 1.25)
    if subtype == "HCM":
        base.update(edv=u(85, 130), ef=u(0.66, 0.8), wall=u(9.0, 12.0), speed=u(0.55, 0.8), early=u(0.45, 0.6))
        base["septal_extra"] = 4.0 + 12.0 * severity
        base["septal_width"] = u(0.6, 1.0) if rng.random() < 0.75 else np.pi  # asymmetric or concentric
        base["la"] *= u(1.1, 1.3)
        if lge:
            for side in (1.0, -1.0):
                scars.append(ScarPatch(side * insertion, u(0.2, 0.35), (u(0.0, 0.2), u(0.55, 0.9)), (0.2, 0.85),
                                       u(0.6, 1.0), patchiness=u(0.3, 0.7), phase=u(0, 6.3)))  # fmt: skip
            if severity > 0.4:
                scars.append(ScarPatch(u(-0.3, 0.3), u(0.3, 0.5), (0.15, 0.75), (0.3, 0.7), u(0.5, 0.9),
                                       patchiness=u(0.6, 0.9), phase=u(0, 6.3)))  # fmt: skip
    elif subtype == "DCM":
        base.update(edv=210 + 110 * severity + u(-10, 10), ef=0.40 - 0.24 * severity, sphericity=u(2.0, 2.4))
        base.update(wall=u(5.5, 7.5), septal_extra=u(0.0, 0.5), hr=float(np.clip(rng.normal(80, 10), 60, 110)))
        base.update(rv_ef=u(0.35, 0.55), la=base["la"] * u(1.15, 1.35))
        if lge:
            scars.append(ScarPatch(u(-0.2, 0.2), u(0.5, 0.8), (u(0.05, 0.2), u(0.6, 0.85)), (0.35, 0.65),
                                   u(0.6, 0.9), patchiness=u(0.0, 0.3), phase=u(0, 6.3)))  # fmt: skip
    elif subtype == "NDLVC":
        base.update(edv=u(125, 175), ef=u(0.50, 0.58) - 0.05 * severity)
        center = LATERAL + INFERIOR_SIGN * u(0.2, 0.7)
        kw["hypokinesis"] = ((center, u(0.6, 1.0), u(0.55, 0.85)),)
        if lge:
            ring = rng.random() < 0.5
            span = np.pi if ring else u(1.0, 1.6)  # a full subepicardial ring or an inferolateral band
            scars.append(ScarPatch(center, span, (u(0.05, 0.2), u(0.75, 0.95)), (u(0.5, 0.65), 1.0),
                                   u(0.85, 1.0), patchiness=u(0.0, 0.15), phase=u(0, 6.3)))  # fmt: skip
    elif subtype == "RCM":
        base.update(edv=u(95, 135), ef=u(0.52, 0.65), wall=u(9.5, 12.5), early=u(0.85, 0.95), speed=u(1.5, 2.2))
        base.update(
            la=base["la"] * u(1.35, 1.6), ra=base["ra"] * u(1.3, 1.55), hr=float(np.clip(rng.normal(78, 9), 60, 105))
        )
        if lge:
            scars.append(ScarPatch(0.0, np.pi, (0.0, 0.95), (0.0, u(0.35, 0.55)), u(0.55, 0.85),
                                   patchiness=u(0.0, 0.2), phase=u(0, 6.3)))  # fmt: skip
            kw.update(lge_blood=u(0.45, 0.65), lge_myo=u(0.12, 0.25))
    elif subtype == "ARVC":
        base.update(rv_width=base["rv_width"] * (1.35 + 0.55 * severity), rv_ef=0.42 - 0.18 * severity)
        base.update(ef=u(0.48, 0.62))
        kw["rv_bulge"] = (INFERIOR_SIGN * u(0.3, 0.7), u(0.3, 0.5), 4.0 + 6.0 * severity)
        base["ra"] *= u(1.1, 1.3)
        if lge:
            scars.append(ScarPatch(INFERIOR_SIGN * u(0.2, 0.6), u(0.5, 0.9), (0.1, 0.7), (0.0, 1.0), u(0.7, 1.0),
                                   patchiness=u(0.2, 0.5), phase=u(0, 6.3), rv=True))  # fmt: skip
            scars.append(ScarPatch(LATERAL + INFERIOR_SIGN * u(0.3, 0.7), u(0.5, 0.9), (0.2, 0.8), (0.6, 1.0),
                                   u(0.7, 1.0), patchiness=u(0.1, 0.3), phase=u(0, 6.3)))  # fmt: skip
    radius, length = _lv_shape(base["edv"], base["sphericity"])
    heart = Heart(
        lv_radius=radius,
        lv_length=length,
        wall=base["wall"],
        septal_wall=base["wall"] + base["septal_extra"],
        septal_width=base["septal_width"],
        apex_wall=max(4.0, 0.6 * base["wall"]),
        rv_width=base["rv_width"],
        rv_insertion=insertion,
        rv_length=u(0.78, 0.9),
        rv_wall=u(3.0, 4.0),
        rv_ef=base["rv_ef"],
        la_radius=base["la"],
        ra_radius=base["ra"],
        ef=base["ef"],
        heart_rate=base["hr"],
        systole=base["systole"] * (base["hr"] / 68.0) ** 0.3,
        early_filling=base["early"],
        filling_speed=base["speed"],
        scars=tuple(scars),
        fat=u(1.5, 4.0),
        **kw,
    )
    return heart, severity
