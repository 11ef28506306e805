"""Foreign synthetic cardiac MR cohort: a second, independently built DICOM generator.

The project's model is trained only on images from its own phantom (``cccmr_model/phantom``). To measure how
a trained release does on images it has never seen the like of, this module builds a cohort from a different
description of the anatomy, written from general knowledge of cardiac MR and DICOM, without reading or
importing the project phantom or any other project code:

* a 3D heart in its own frame (LV as a truncated ellipsoidal shell with papillary muscles, RV as a shell
  wrapped on the septum, atria above the AV plane, epicardial fat), its long axis pointing left, anterior and
  inferior, placed left-anterior in a torso (subcutaneous fat, chest wall, sternum, lungs, domed diaphragm,
  liver, stomach, spine and cord, paraspinal muscles, aorta, pulmonary trunk, IVC), all in patient LPS mm;
* motion over one R-R interval from a volume curve (ejection, rapid filling, diastasis, atrial kick) with
  base descent, wall thickening at constant myocardial volume and regional hypokinesis;
* scanner-like planes (short-axis stack perpendicular to the long axis, a four-chamber plane containing it,
  a short-axis LGE stack), rendered by evaluating tissue at the 3D position of every pixel, so the DICOM
  geometry tags say exactly where each pixel lies and all views of a subject agree;
* "site" profiles varying vendor tags, matrix, pixel spacing, bit depth, rescale, intensity scale, Rician
  noise, coil shading and blur.

Labels: 0 healthy, 1 cardiomyopathy (HCM, DCM, NDLVC, RCM, ARVC), each drawn with a severity so that mild
disease overlaps the healthy range. Only numpy, scipy and pydicom are used.

    python -m benchmarks.support.foreign_cohort --out DIR --subjects N --seed S [--lge-fraction 1.0]
"""

from __future__ import annotations

import argparse
import csv
import math
import struct
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy import ndimage

F32 = np.float32
SUBTYPES = ("HCM", "DCM", "NDLVC", "RCM", "ARVC")
SUBTYPE_SHARES = (0.3, 0.3, 0.2, 0.1, 0.1)
MANIFEST_FIELDS = ("subject_id", "label", "subtype", "cine_4ch", "cine_sax", "lge_sax")
SLICE_THICKNESS = 8.0
X_HAT, Y_HAT = np.eye(3)[:2]


@dataclass(frozen=True)
class Site:
    """A scanner/protocol profile: vendor tags, matrix choices, storage and image-quality ranges."""

    manufacturer: str
    model: str
    tesla: float
    names: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # SeriesDescription choices: SAX, 4CH, LGE
    bits_stored: int
    blood_level: tuple[float, float]  # real-world value of cine blood
    slope: tuple[float, float] | None  # RescaleSlope range (None: no rescale tags)
    columns: tuple[int, ...]
    noise: tuple[float, float]  # cine noise sigma relative to blood


SITES = (
    Site("SIEMENS", "Avanto", 1.5, (("SA_CINE_TF2D", "sa_cine_trufi_retro"), ("4CH_CINE", "cine_4ch_trufi"),
         ("SA_PSIR_LGE", "tfl_psir_sax_MAG")), 12, (900, 1800), None, (192, 208, 256), (0.02, 0.04)),
    Site("SIEMENS", "MAGNETOM Skyra", 3.0, (("sax bSSFP retro", "CINE_SAX_TF_3T"), ("cine 4ch", "4CH_CINE_TF"),
         ("LGE sax", "SAX_PSIR_MAG")), 12, (1200, 2400), None, (224, 256), (0.015, 0.03)),
    Site("Philips Medical Systems", "Ingenia", 1.5, (("sBTFE_SA", "cine sax bSSFP"), ("sBTFE_4CH", "cine 4ch"),
         ("LGE sax PSIR", "sIR_TFE_SA")), 12, (700, 1500), (1.2, 3.5), (208, 224, 240, 256), (0.02, 0.045)),
    Site("GE MEDICAL SYSTEMS", "SIGNA Artist", 1.5, (("FIESTA CINE SAX", "Cine SAX FIESTA"),
         ("FIESTA CINE 4CH", "4ch fiesta"), ("MDE SAX", "PSIR MDE SA")), 16, (4000, 15000), None,
         (192, 224, 256), (0.02, 0.04)),
    Site("GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0, (("FIESTA CINE SA 3T", "sa cine"), ("FIESTA 4CH 3T", "4ch"),
         ("MDE SA 3T", "LGE SAX MDE")), 16, (3000, 9000), (0.25, 0.6), (200, 224, 256), (0.015, 0.035)),
)  # fmt: skip


# --------------------------------------------------------------------------------------------------- helpers
def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy from a signed distance (negative inside), linear over `width` mm."""
    return np.clip(0.5 - d / width, 0.0, 1.0)


def _ellipse_sd(u: np.ndarray, v: np.ndarray, A, B) -> np.ndarray:
    """First-order signed distance to the ellipse (u/A)^2 + (v/B)^2 = 1 (negative inside)."""
    ua, vb = u / A, v / B
    return (ua * ua + vb * vb - 1.0) / (2.0 * np.sqrt((ua / A) ** 2 + (vb / B) ** 2) + 1e-4)


def _ellipsoid_sd(u: np.ndarray, v: np.ndarray, z: np.ndarray, A, B, C) -> np.ndarray:
    """First-order signed distance to the ellipsoid (u/A)^2 + (v/B)^2 + (z/C)^2 = 1 (negative inside)."""
    ua, vb, zc = u / A, v / B, z / C
    return (ua * ua + vb * vb + zc * zc - 1.0) / (2.0 * np.sqrt((ua / A) ** 2 + (vb / B) ** 2 + (zc / C) ** 2) + 1e-4)


def _segment_distance(P: np.ndarray, p0: np.ndarray, d: np.ndarray, length: float) -> np.ndarray:
    """Distance from points P (..., 3) to the segment p0 + t d, t in [0, length]."""
    q = P - p0.astype(P.dtype)
    t = np.clip(q @ d.astype(P.dtype), 0.0, length)
    return np.linalg.norm(q - t[..., None] * d.astype(P.dtype), axis=-1)


def _vm(theta: np.ndarray, centre: float, kappa: float) -> np.ndarray:
    """Von Mises shaped angular bump, 1 at `centre`."""
    return np.exp(kappa * (np.cos(theta - centre) - 1.0))


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _perp(v: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Unit component of v perpendicular to the unit vector `axis`."""
    return _unit(v - (v @ axis) * axis)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _fmt(v: float) -> str:
    """A decimal string (DS) of at most 16 characters."""
    return f"{v:.8g}" if abs(v) >= 1e-6 else "0"


Layers = list[tuple[np.ndarray, "float | np.ndarray"]]


def _over(layers: Layers, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Front-to-back composite of (occupancy, intensity) layers; returns (signal, coverage)."""
    acc, cov = np.zeros(shape, F32), np.zeros(shape, F32)
    for frac, value in layers:
        add = (1.0 - cov) * frac
        acc += add * value
        cov += add
    return acc, cov


# --------------------------------------------------------------------------------------------------- heart
@dataclass(frozen=True)
class Cycle:
    """LV volume curve over one R-R interval, as the ejected share of the stroke volume."""

    systole: float  # end-systole, fraction of R-R
    rapid: float  # duration of rapid filling
    early: float  # share of the stroke volume refilled in rapid filling
    atrial: float  # onset of the atrial kick

    def ejected(self, phase: float) -> float:
        """0 at end-diastole, 1 at end-systole."""
        p = phase % 1.0
        if p < self.systole:
            return 0.5 * (1.0 - math.cos(math.pi * p / self.systole))
        q = p - self.systole
        if q < self.rapid:
            return 1.0 - self.early * 0.5 * (1.0 - math.cos(math.pi * q / self.rapid))
        rest = 1.0 - self.early
        if p < self.atrial:  # diastasis: slow filling of a quarter of the remainder
            return rest - 0.25 * rest * (q - self.rapid) / (self.atrial - self.systole - self.rapid)
        return 0.75 * rest * 0.5 * (1.0 + math.cos(math.pi * (p - self.atrial) / (1.0 - self.atrial)))

    @property
    def mid_diastole(self) -> float:
        return 0.5 * (self.systole + self.rapid + self.atrial)


@dataclass
class Heart:
    """The heart in its own frame: s along the LV long axis w (ED base 0 -> apex), a along ea (toward the
    septum/RV), b along eb = w x ea; theta = atan2(b, a) is 0 at the mid-septum and about +90 deg inferior.
    Lengths in mm at end-diastole."""

    length: float  # base to endocardial apex
    c: float  # LV ellipsoid centre below the base
    r0: float  # endocardial radial semi-axis
    w_sep: float  # septal wall
    w_lat: float  # lateral wall
    ef: float
    lam_es: float  # LV long-axis length factor at ES
    cycle: Cycle
    hypo: tuple[float, float, float] = (0.0, 0.0, 1.0)  # regional hypokinesis (depth, theta, kappa)
    rv_t: float = 25.0  # RV cavity depth over the mid-septum
    rv_width: float = 1.0  # RV half-width / LV epicardial radius
    rv_wall: float = 3.5
    rv_k: float = 0.33  # inward free-wall excursion at ES, share of depth
    rv_lam_es: float = 0.82
    bulge: tuple[float, float, float] = (0.0, 0.0, 0.5)  # RV aneurysm (mm, b position, s as share of length)
    atrial_scale: float = 1.0
    atrial_k: float = 0.18  # atrial growth at ES
    fat: tuple[float, float] = (1.5, 5.0)  # epicardial fat, extra in the AV groove
    papillary: tuple[tuple[float, float], ...] = ((-2.35, 4.5), (1.9, 4.0))  # (theta, radius)
    texture: tuple[float, float] = (0.0, 0.0)  # phases of the endocardial and fat angular texture
    scar: dict = field(default_factory=dict)
    w: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, -1.0]))
    ea: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))  # ED mitral-plane centre, LPS

    def __post_init__(self) -> None:
        self.a_endo = self.length - self.c
        self.a_epi = self.a_endo + 0.65 * self.w_lat
        self.s_apex = self.c + self.a_epi  # epicardial apex
        self.rv_d = 0.5 * (self.rv_t + self.r0 + self.w_sep + 0.5 * self.r0)  # inner edge at a = -r0/2
        self.rv_ac = self.rv_d - 0.5 * self.r0
        self.rv_wb = self.rv_width * (self.r0 + self.w_lat)
        self.rv_a = 0.8 * self.s_apex - self.c
        la, ra = np.array([21.0, 25.0, 24.0]) * self.atrial_scale, np.array([21.0, 24.0, 25.0]) * self.atrial_scale
        la_a, ra_a = 0.1 * self.r0, 0.1 * self.r0 + la[0] + ra[0] - 1.0
        self.atria = tuple(
            tuple(map(float, v)) for v in ((la_a, 4.0, 10.0 - la[2], *la), (ra_a, -4.0, 10.0 - ra[2], *ra))
        )

    @property
    def eb(self) -> np.ndarray:
        return np.cross(self.w, self.ea)

    def to_patient(self, a, b, s) -> np.ndarray:
        """Heart-frame coordinates (broadcastable) to LPS points."""
        return (
            self.origin + np.multiply.outer(a, self.ea) + np.multiply.outer(b, self.eb) + np.multiply.outer(s, self.w)
        )

    def surface_points(self) -> np.ndarray:
        """Points on the ED outer surfaces (LV, RV, atria at their largest), for extents."""
        th, v = np.meshgrid(np.linspace(0, 2 * np.pi, 36), np.linspace(0, np.pi, 18))
        ct, st, cv, sv = np.cos(th), np.sin(th), np.cos(v), np.sin(v)
        s = self.c + self.a_epi * cv
        pts = [self.to_patient((self.r0 + self.w_sep) * sv * ct, (self.r0 + self.w_sep) * sv * st, s)[s >= 0]]
        d, wb, t = self.rv_d + self.bulge[0], self.rv_wb, self.rv_wall
        s = self.c + (self.rv_a + t) * cv
        pts.append(self.to_patient(self.rv_ac + (d + t) * sv * ct, (wb + t) * sv * st, s)[s >= 0])
        g = 1.0 + self.atrial_k
        for ac, bc, sc, ra, rb, rs in self.atria:
            pts.append(self.to_patient(ac + g * ra * sv * ct, bc + g * rb * sv * st, sc + rs * cv).reshape(-1, 3))
        return np.concatenate(pts)

    def insertion_angle(self) -> float:
        """Angle of the RV insertion points (the tips of the RV crescent) at mid-ventricle, ED."""
        th = np.linspace(0.0, np.pi, 181)
        r = self.r0 + self.w_lat + (self.w_sep - self.w_lat) * ((1 + np.cos(th)) / 2) ** 2 + 1.5
        inside = ((r * np.cos(th) - self.rv_ac) / self.rv_d) ** 2 + (r * np.sin(th) / self.rv_wb) ** 2 < 1.0
        return float(th[inside].max()) if inside.any() else 1.2

    def frame_coords(self, P: np.ndarray) -> dict[str, np.ndarray]:
        """Static per-pixel heart-frame coordinates and angular profiles of the points P (..., 3)."""
        q = P - self.origin.astype(P.dtype)
        a, b, s = (q @ e.astype(P.dtype) for e in (self.ea, self.eb, self.w))
        theta = np.arctan2(b, a)
        depth, th_h, kappa = self.hypo
        p1, p2 = self.texture
        return {
            "a": a, "b": b, "s": s, "r": np.hypot(a, b), "theta": theta,
            "wall": self.w_lat + (self.w_sep - self.w_lat) * ((1 + np.cos(theta)) / 2) ** 2,
            "motion": 1.0 - depth * _vm(theta, th_h, kappa),
            "rough": 1.0 + 0.025 * np.cos(3 * theta + p1) + 0.015 * np.cos(5 * theta + p2),
            "fatmod": 0.5 + 0.5 * np.sin(2 * theta + p2),
        }  # fmt: skip

    def render(self, g: dict[str, np.ndarray], phase: float, tis: dict[str, float], pw: float, lge: bool = False):
        """Composite the heart at one phase over the coordinates `g`; returns (signal, coverage)."""
        f = self.cycle.ejected(phase)
        a, b, s, r = g["a"], g["b"], g["s"], g["r"]
        sa = self.s_apex
        # LV: apex fixed, long axis shortens by lam; radius from the volume curve; wall volume conserved.
        lam = 1.0 - (1.0 - self.lam_es) * f
        s_ed = sa - (sa - s) / lam
        z = s_ed - self.c
        cfac = math.sqrt((1.0 - self.ef * f) / lam)
        r0 = self.r0 * g["rough"]
        r_endo = r0 * (1.0 - g["motion"] * (1.0 - cfac))
        r_epi = np.sqrt(r_endo**2 + ((r0 + g["wall"]) ** 2 - r0**2) / lam)
        base = _ramp(-s_ed * lam, pw)
        d_endo, d_epi = _ellipse_sd(r, z, r_endo, self.a_endo), _ellipse_sd(r, z, r_epi, self.a_epi)
        blood = _ramp(d_endo, pw) * base
        epi_in = _ramp(d_epi, pw) * base
        myo = np.clip(epi_in - blood, 0.0, 1.0)
        window = _ramp(np.abs(s_ed - 0.55 * self.length) - 0.22 * self.length, 4.0)
        for th, rad in self.papillary:
            rp = 0.62 * self.r0 * cfac
            dp = np.hypot(a - rp * math.cos(th), b - rp * math.sin(th)) - rad * (1.0 + 0.35 * f)
            pap = _ramp(dp, pw) * window * blood
            blood, myo = blood - pap, myo + pap

        # RV: an ellipsoid outside the LV epicardium; free wall moves in, tricuspid plane descends.
        lam_rv = 1.0 - (1.0 - self.rv_lam_es) * f
        s_rv = sa - (sa - s) / lam_rv
        depth = self.rv_d * (1.0 - self.rv_k * f)
        amp, b0, s0 = self.bulge
        if amp > 0:  # aneurysmal bulge that does not contract
            depth = depth + amp * np.exp(-(((b - b0) / 14.0) ** 2) - ((s_rv - s0 * sa) / 18.0) ** 2)
        wb, t = self.rv_wb * (1.0 - 0.3 * self.rv_k * f), self.rv_wall
        u, zr = a - self.rv_ac, s_rv - self.c
        rv_base = _ramp(-s_rv * lam_rv, pw) * (1.0 - epi_in)
        rv_blood = _ramp(_ellipsoid_sd(u, b, zr, depth, wb, self.rv_a), pw) * rv_base
        d_rv_out = _ellipsoid_sd(u, b, zr, depth + t, wb + t, self.rv_a + t)
        rv_myo = np.clip(_ramp(d_rv_out, pw) * rv_base - rv_blood, 0.0, 1.0)

        # Atria above the AV plane (which descends by `shift`); they fill while the ventricles empty.
        shift, grow = sa * (1.0 - lam), 1.0 + self.atrial_k * f
        above = _ramp(s - shift, pw)
        atria = []
        for ac, bc, sc, ra, rb, rs in self.atria:
            za, rs = s - (sc + 0.5 * shift), rs + 0.5 * shift
            inner = _ramp(_ellipsoid_sd(a - ac, b - bc, za, ra * grow, rb * grow, rs), pw) * above
            outer = _ramp(_ellipsoid_sd(a - ac, b - bc, za, ra * grow + 2, rb * grow + 2, rs + 2), pw) * above
            atria.append((np.clip(outer - inner, 0.0, 1.0), inner))

        # Epicardial fat, thicker in the AV groove; above the AV plane only as a ring.
        fat_t = self.fat[0] * g["fatmod"] + self.fat[1] * np.exp(-(((s_ed - 4.0) / 12.0) ** 2))
        ring = np.maximum(base, _ramp(-(d_epi + 5.0), pw))
        env = _ramp(_ellipse_sd(r, z, r_epi + fat_t, self.a_epi + 0.5 * fat_t), pw) * _ramp(-s_ed - fat_t, pw) * ring
        rv_ring = np.maximum(_ramp(-s_rv * lam_rv, pw), _ramp(-(d_rv_out + 5.0), pw))
        env = np.maximum(env, _ramp(d_rv_out - fat_t, pw) * _ramp(-(s_rv + fat_t), pw) * rv_ring)

        myo_val, rv_val = tis["myo"], tis["myo"]
        if lge and self.scar:
            tau = np.clip(d_endo / (d_endo - d_epi + 1e-3), 0.0, 1.0)  # 0 endocardium .. 1 epicardium
            scar = self._lv_scar(tau, g["theta"], s_ed)
            myo_val = tis["myo"] * (1.0 - scar) + tis["scar"] * scar
            rv_scar = self.scar.get("rv", 0.0) * self._patch(g["theta"], s_rv, 1.7)
            rv_val = tis["myo"] * (1.0 - rv_scar) + tis["scar"] * rv_scar
        layers: Layers = [(myo, myo_val), (blood, tis["blood"]), (rv_myo, rv_val), (rv_blood, tis["blood_rv"])]
        for wall, cavity in atria:
            layers += [(wall, tis["myo_atrial"]), (cavity, tis["blood_atrial"])]
        layers.append((env, tis["fat"]))
        return _over(layers, a.shape)

    def _patch(self, theta: np.ndarray, s: np.ndarray, k: float) -> np.ndarray:
        """Smooth patchy texture in (theta, s), 0..1."""
        p1, p2 = self.scar.get("phase", (0.0, 0.0))
        v = np.sin(2 * k * theta + p1 + 0.11 * s) * np.cos(0.09 * s + p2) + 0.3 * np.sin(5 * theta - 0.2 * s + p2)
        return _smoothstep(v, -0.2, 0.5)

    def _lv_scar(self, tau: np.ndarray, theta: np.ndarray, s_ed: np.ndarray) -> np.ndarray:
        """LGE scar fraction in the LV myocardium for this subject's pattern."""
        sc = self.scar
        kind = sc["kind"]
        if kind == "insertion":  # HCM: patchy mid-wall at the RV insertion points
            ti = sc["theta_ins"]
            ang = np.maximum(_vm(theta, ti, 5.0), _vm(theta, -ti, 5.0)) + sc["septal"] * _vm(theta, 0.0, 3.0)
            out = 1.5 * ang * np.exp(-(((tau - 0.5) / 0.3) ** 2)) * (0.45 + 0.55 * self._patch(theta, s_ed, 1.3))
        elif kind == "septal_stripe":  # DCM: mid-wall septal stripe
            out = 1.3 * _vm(theta, 0.0, 2.0) * np.exp(-(((tau - 0.5) / 0.22) ** 2))
        elif kind == "subepicardial":  # NDLVC: lateral / ring-like subepicardial
            out = (sc["ring"] + (1 - sc["ring"]) * _vm(theta, sc["theta"], 2.0)) * _smoothstep(tau, 0.5, 0.8)
        elif kind == "diffuse":  # RCM: diffuse subendocardial
            out = (1.0 - _smoothstep(tau, 0.3, 0.6)) * (0.6 + 0.4 * self._patch(theta, s_ed, 1.0))
        else:  # ARVC: the RV free wall (in render); the LV at most an inferolateral subepicardial patch
            out = sc["lv"] * _vm(theta, 2.3, 3.0) * _smoothstep(tau, 0.6, 0.85)
        long = _ramp(np.abs(s_ed - 0.45 * self.length) - 0.38 * self.length, 6.0)
        return np.clip(sc["amp"] * out * long, 0.0, 1.0)


def sample_heart(rng: np.random.Generator, subtype: str) -> tuple[Heart, float]:
    """Draw a heart in its own frame for a subtype ('' = healthy); returns (heart, severity). Disease
    parameters move from a healthy draw toward the subtype's range by the severity, so mild cases overlap."""
    u = rng.uniform
    sev = 0.0 if not subtype else float(np.clip(rng.beta(2.0, 1.4), 0.12, 1.0))
    r_mid, wall, ef, length = u(24, 28), u(7, 10), u(0.55, 0.70), u(76, 92) * u(0.92, 1.08)
    lam, ratio = u(0.83, 0.88), u(0.85, 1.0)  # LV length at ES; lateral / septal wall
    cyc = {"systole": u(0.31, 0.38), "rapid": u(0.14, 0.2), "early": u(0.65, 0.8), "atrial": u(0.82, 0.88)}
    kw: dict = {"rv_t": u(21, 30), "rv_width": u(0.92, 1.08), "rv_k": u(0.28, 0.4), "rv_lam_es": u(0.79, 0.85),
                "atrial_scale": u(0.9, 1.1)}  # fmt: skip
    scar: dict = {}
    if subtype == "HCM":
        wall, ratio = _lerp(wall, u(17, 25), sev), _lerp(ratio, u(0.5, 0.8), sev)
        r_mid, ef, lam = _lerp(r_mid, u(17, 22), sev), _lerp(ef, u(0.68, 0.80), sev), _lerp(lam, u(0.88, 0.93), sev)
        cyc["early"] = _lerp(cyc["early"], u(0.45, 0.6), sev)  # impaired relaxation
        kw["atrial_scale"] *= _lerp(1.0, u(1.1, 1.3), sev)
        if rng.random() < 0.7:
            scar = {"kind": "insertion", "amp": _lerp(0.5, 1.0, sev), "septal": u(0, 0.6)}
    elif subtype == "DCM":
        r_mid, wall, length = _lerp(r_mid, u(32, 40), sev), _lerp(wall, u(5, 7), sev), _lerp(length, u(92, 108), sev)
        ef, lam = _lerp(ef, u(0.15, 0.35), sev), _lerp(lam, u(0.93, 0.97), sev)
        kw["rv_k"], kw["rv_lam_es"] = _lerp(kw["rv_k"], u(0.15, 0.3), sev), _lerp(kw["rv_lam_es"], u(0.86, 0.93), sev)
        kw["atrial_scale"] *= _lerp(1.0, u(1.1, 1.35), sev)
        if rng.random() < 0.35:
            scar = {"kind": "septal_stripe", "amp": _lerp(0.5, 1.0, sev)}
    elif subtype == "NDLVC":
        r_mid, wall = _lerp(r_mid, u(26, 31), sev), _lerp(wall, u(6, 8.5), sev)
        ef, lam = _lerp(ef, u(0.40, 0.50), sev), _lerp(lam, u(0.89, 0.93), sev)
        kw["hypo"] = (_lerp(0.0, u(0.5, 0.85), sev), np.pi + u(-0.9, 0.6), u(1.5, 3.0))
        if rng.random() < 0.8:
            scar = {
                "kind": "subepicardial",
                "amp": _lerp(0.5, 1.0, sev),
                "ring": u(0, 0.7),
                "theta": np.pi + u(-0.8, 0.8),
            }
    elif subtype == "RCM":
        r_mid, wall = _lerp(r_mid, u(19, 24), sev), _lerp(wall, u(9, 14) if rng.random() < 0.6 else u(7, 10), sev)
        ef, lam = _lerp(ef, u(0.45, 0.60), sev), _lerp(lam, u(0.90, 0.95), sev)
        cyc["early"] = _lerp(cyc["early"], u(0.75, 0.88), sev)  # restrictive filling, little atrial kick
        kw["atrial_scale"] *= _lerp(1.0, u(1.45, 1.85), sev)
        kw["atrial_k"] = _lerp(0.18, 0.06, sev)
        if rng.random() < 0.5:
            scar = {"kind": "diffuse", "amp": _lerp(0.4, 0.9, sev)}
    elif subtype == "ARVC":
        kw["rv_t"], kw["rv_width"] = _lerp(kw["rv_t"], u(36, 48), sev), _lerp(kw["rv_width"], u(1.15, 1.35), sev)
        kw["rv_k"], kw["rv_lam_es"] = _lerp(kw["rv_k"], u(0.06, 0.16), sev), _lerp(kw["rv_lam_es"], u(0.9, 0.96), sev)
        kw["rv_wall"], kw["bulge"] = _lerp(3.5, 2.0, sev), (_lerp(0.0, u(6, 12), sev), u(-25, 25), u(0.2, 0.7))
        ef = _lerp(ef, u(0.45, 0.58), sev)
        if rng.random() < 0.7:
            scar = {"kind": "rv", "amp": 1.0, "rv": _lerp(0.5, 1.0, sev), "lv": u(0, 1) * (rng.random() < 0.4)}
    if scar:
        scar["phase"] = (u(0, 2 * np.pi), u(0, 2 * np.pi))
    c = u(0.15, 0.25) * length
    r0 = r_mid / math.sqrt(1.0 - ((0.5 * length - c) / (length - c)) ** 2)  # r_mid is the radius at half length
    heart = Heart(
        length=length, c=c, r0=r0, w_sep=wall, w_lat=wall * ratio, ef=ef, lam_es=lam, cycle=Cycle(**cyc),
        fat=(u(0.5, 3.0), u(3.0, 8.0)), scar=scar, texture=(u(0, 2 * np.pi), u(0, 2 * np.pi)),
        papillary=((-2.35 + u(-0.25, 0.25), u(3.5, 5.5)), (1.9 + u(-0.25, 0.25), u(3.0, 5.0))), **kw,
    )  # fmt: skip
    if scar.get("kind") == "insertion":
        scar["theta_ins"] = heart.insertion_angle()
    return heart, sev


# --------------------------------------------------------------------------------------------------- torso
@dataclass
class Torso:
    """Static anatomy around the heart in LPS mm (chest centred on x = y = 0)."""

    ax: float  # half width
    ay: float  # half depth
    fat: float
    muscle: float
    shape: list[tuple[int, float, float]]  # angular harmonics of the outline
    mid: np.ndarray  # LV centre at half length (ED)
    base: np.ndarray  # centre of the AV plane region
    z_low: float  # lowest point of the heart (diaphragm reference)
    sphere: tuple[np.ndarray, float]  # bounding sphere of the beating heart
    spine: tuple[float, float]  # y of the spinal canal and of the vertebral body
    aorta: tuple[float, float, float]  # descending aorta x, y, radius
    ivc: tuple[float, float, float, float]  # x, y, radius, top z
    vessels: list[tuple[np.ndarray, np.ndarray, float, float]]  # ascending aorta, pulmonary trunk
    liver_x: float
    stomach: tuple[np.ndarray, np.ndarray]  # centre, radii
    coil: tuple[np.ndarray, float, float]  # bias gradient, anterior and posterior coil gain

    def signal(self, P: np.ndarray, tis: dict[str, float], pw: float) -> np.ndarray:
        """Tissue signal at points P (..., 3), everything but the beating heart."""
        x, y, z = P[..., 0], P[..., 1], P[..., 2]
        phi = np.arctan2(y / self.ay, x / self.ax)
        m = 1.0 - 0.08 * np.clip(np.sin(phi), 0.0, None) ** 6  # flatter back
        for k, amp, ph in self.shape:
            m = m + amp * np.cos(k * phi + ph)
        d_body = _ellipse_sd(x, y, self.ax * m, self.ay * m)
        fat, mus, (mx, my, _) = self.fat, self.muscle, map(float, self.mid)
        # diaphragm: right dome higher, domes fall laterally and steeply into the posterior recesses
        zd = self.z_low - 3.0 + 14.0 / (1.0 + np.exp((x - mx + 45.0) / 15.0)) - 0.0009 * (x - mx) ** 2
        below = _ramp(z - zd + 0.55 * np.clip(y - my - 25.0, 0.0, None), pw)
        cav, wall_in = _ramp(d_body + fat + mus, pw), _ramp(d_body + fat, pw)
        y_canal, y_body = self.spine
        d_vb = _ellipse_sd(x, y - y_body, 17.0, 15.0)
        (xa, ya, ra), (xi, yi, ri, zi) = self.aorta, self.ivc
        front = self.ay * (1.0 + sum(amp * math.cos(k * math.pi / 2 - ph) for k, amp, ph in self.shape))
        sc, sr = (tuple(map(float, v)) for v in self.stomach)
        layers: Layers = [
            (_ramp(np.hypot(x, y - y_canal) - 4.5, pw), tis["cord"]),
            (_ramp(np.hypot(x, y - y_canal) - 9.0, pw), tis["csf"]),
            (_ramp(d_vb, pw), tis["marrow"]),
            (_ramp(d_vb - 2.5, pw), tis["cortex"]),
            (_ramp(np.hypot(x - xa, y - ya) - ra, pw), tis["vessel"]),
            (_ramp(np.hypot(x - xi, y - yi) - ri, pw) * _ramp(z - zi, pw), tis["vessel"]),
            *((_ramp(_segment_distance(P, p0, d, n) - rad, pw), tis["vessel"]) for p0, d, n, rad in self.vessels),
            (_ramp(_ellipse_sd(x, y + front - fat - 0.5 * mus, 13.0, 0.5 * mus), pw), tis["marrow"]),  # sternum
            (_ramp(_ellipsoid_sd(x - sc[0], y - sc[1], z - sc[2], *sr), pw) * below, tis["stomach"]),
            (_ramp(_ellipse_sd(np.abs(x) - 26.0, y - y_canal - 4.0, 21.0, 27.0), pw) * wall_in, tis["muscle"]),
            (cav * below * _ramp(x - (self.liver_x - 0.35 * y + 8.0 * np.sin(z / 25.0)), pw), tis["liver"]),
            (cav * below, tis["abdomen"]),
            (_ramp(_ellipse_sd(x + 4.0, y - y_body + 30.0, 20.0, 16.0), pw), tis["mediastinum"]),
            (cav, tis["lung"]),
            (wall_in, tis["muscle"]),
            (_ramp(d_body, pw), tis["fat"]),
        ]  # fmt: skip
        return _over(layers, x.shape)[0]

    def bias(self, P: np.ndarray) -> np.ndarray:
        """Coil shading: a smooth low-order field times anterior/posterior array gain, 1 at the heart."""
        grad, ant, post = self.coil

        def gain(Q: np.ndarray) -> np.ndarray:
            q = (Q - self.mid) / 150.0
            lin = np.exp(q @ grad - 0.15 * (q**2).sum(-1))
            return lin * (
                1.0 + ant * np.exp(-(Q[..., 1] + self.ay) / 70.0) + post * np.exp((Q[..., 1] - self.ay) / 70.0)
            )

        return (gain(P.astype(np.float64)) / gain(self.mid)).astype(F32)


def place_heart(rng: np.random.Generator, heart: Heart) -> Torso:
    """Orient the heart (long axis left/anterior/inferior, septum facing right-anterior), put it left-anterior
    in a torso drawn around it, and return the torso."""
    u = rng.uniform
    az, el = math.radians(u(35, 58)), math.radians(u(18, 38))
    heart.w = np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), -math.sin(el)])
    heart.ea = _perp(np.array([-0.65, -0.75, 0.1]) + rng.normal(0, 0.08, 3), heart.w)
    ax, ay, fat, mus = u(150, 185), u(105, 125), u(8, 24), u(8, 14)
    mid = np.array([u(30, 50), u(72, 86) - ay, 0.0])
    for _ in range(6):  # keep the RV behind the anterior chest wall
        heart.origin = mid - 0.5 * heart.length * heart.w
        out = _ellipse_sd(*heart.surface_points()[:, :2].T, ax - fat - mus, ay - fat - mus).max()
        if out < -4.0:
            break
        mid[1] += out + 5.0
    heart.origin = mid - 0.5 * heart.length * heart.w
    pts = heart.surface_points()
    lo, hi = pts.min(0), pts.max(0)
    centre, y_body = 0.5 * (lo + hi), ay - fat - u(75, 85)
    ra = heart.atria[1]
    ra_c = heart.to_patient(ra[0], ra[1], ra[2])
    ao0 = heart.to_patient(0.3 * heart.r0, -0.6 * heart.r0, -8.0)
    pa0 = heart.to_patient(heart.rv_ac + 0.35 * heart.rv_d, -0.55 * heart.rv_wb, -3.0)
    return Torso(
        ax=ax, ay=ay, fat=fat, muscle=mus, shape=[(k, u(0.0, 0.035), u(0, 2 * np.pi)) for k in (2, 3, 4)],
        mid=mid, base=heart.to_patient(0.5 * heart.rv_ac, 0.0, -4.0), z_low=float(lo[2]),
        sphere=(centre, float(np.linalg.norm(pts - centre, axis=1).max() + 14.0)),
        spine=(ay - fat - u(45, 55), y_body), aorta=(u(22, 30), y_body - u(8, 16), u(10, 13)),
        ivc=(float(ra_c[0]) - 5.0, float(ra_c[1]) + 8.0, u(9, 12), float(ra_c[2])),
        vessels=[(ao0, _unit(np.array([-0.25, -0.2, 1.0]) + rng.normal(0, 0.08, 3)), 70.0, u(13, 16)),
                 (pa0, _unit(np.array([0.4, 0.6, 1.0]) + rng.normal(0, 0.08, 3)), 45.0, u(11, 14))],
        liver_x=u(35, 60),
        stomach=(np.array([mid[0] + u(15, 40), mid[1] + u(0, 25), lo[2] - u(35, 55)]),
                 np.array([u(30, 45), u(25, 35), u(25, 35)])),
        coil=(rng.normal(0, 0.25, 3), u(0.2, 0.9), u(0.2, 0.8)),
    )  # fmt: skip


def sample_tissues(rng: np.random.Generator, subtype: str, tesla: float) -> tuple[dict, dict]:
    """bSSFP cine (blood ~ 1) and inversion-recovery LGE (myocardium nulled, scar ~ 1) signal levels."""
    u = rng.uniform
    myo = u(0.17, 0.26) if tesla < 2 else u(0.2, 0.3)
    cine = {"blood": 1.0, "blood_rv": u(0.9, 1.0), "blood_atrial": u(0.88, 1.0), "myo": myo, "myo_atrial": myo,
            "fat": u(0.78, 0.95), "liver": u(0.24, 0.34), "muscle": u(0.14, 0.22), "lung": u(0.02, 0.06),
            "marrow": u(0.35, 0.5), "cortex": 0.08, "csf": u(0.8, 0.95), "cord": 0.3, "abdomen": u(0.28, 0.38),
            "stomach": u(0.55, 0.8), "mediastinum": u(0.4, 0.6), "vessel": u(0.85, 1.0), "scar": myo}  # fmt: skip
    blood = u(0.35, 0.6)
    amyloid = subtype == "RCM" and rng.random() < 0.5  # poor myocardial nulling
    lge = {"blood": blood, "blood_rv": blood, "blood_atrial": blood, "myo": u(0.15, 0.3) if amyloid else u(0.02, 0.08),
           "myo_atrial": 0.08, "fat": u(0.4, 0.6), "liver": u(0.18, 0.3), "muscle": u(0.06, 0.12), "lung": 0.02,
           "marrow": u(0.25, 0.4), "cortex": 0.03, "csf": u(0.1, 0.2), "cord": 0.1, "abdomen": u(0.2, 0.3),
           "stomach": 0.1, "mediastinum": u(0.25, 0.35), "vessel": blood, "scar": u(0.85, 1.0)}  # fmt: skip
    return cine, lge


# --------------------------------------------------------------------------------------------------- subject
@dataclass
class Acquisition:
    """Protocol and image-quality draws of one subject (one "site" visit)."""

    rows: int
    cols: int
    spacing: float
    hr: float
    frames: int
    gap: float
    first: float  # first SAX slice, mm from the ED base along the long axis
    rot_sax: float
    rot_4ch: float
    tilt_4ch: float
    shift_4ch: float
    offset: tuple[float, float]  # FOV centre offset from the heart: toward the chest centre, across
    trigger0: float
    blur: float
    noise: float
    noise_lge: float
    level: float
    slope: float | None
    names: tuple[str, str, str]
    series: int
    ti: float
    tr: tuple[float, float]  # cine, LGE
    te: tuple[float, float]
    sex: str
    age: int
    date: str
    time: str
    n_slices: int = 0

    @property
    def rr(self) -> float:
        return 60000.0 / self.hr

    @property
    def step(self) -> float:
        return SLICE_THICKNESS + self.gap


@dataclass
class Subject:
    """Everything needed to render one subject."""

    sid: str
    label: int
    subtype: str
    severity: float
    site: Site
    heart: Heart
    torso: Torso
    acq: Acquisition
    tis_cine: dict
    tis_lge: dict


def make_subject(seed: int, index: int, label: int, subtype: str) -> Subject:
    """Draw one subject deterministically from (seed, index, label, subtype)."""
    rng = np.random.default_rng([seed, index, 11])
    u = rng.uniform
    site = SITES[int(rng.integers(len(SITES)))]
    heart, sev = sample_heart(rng, subtype)
    torso = place_heart(rng, heart)
    cine, lge = sample_tissues(rng, subtype, site.tesla)
    cols = int(rng.choice(site.columns))
    acq = Acquisition(
        rows=int(np.clip(round(cols * u(0.75, 1.0) / 2) * 2, 160, cols)), cols=cols,
        spacing=u(max(1.3, 300.0 / cols), min(1.9, 400.0 / cols)), hr=u(55, 90), frames=int(rng.integers(20, 31)),
        gap=u(0.0, 2.0), first=u(-6.0, 4.0), rot_sax=math.radians(u(-15, 15)), rot_4ch=math.radians(u(-20, 20)),
        tilt_4ch=math.radians(u(-10, 10)), shift_4ch=u(-5, 5), offset=(u(20, 50), u(-10, 10)), trigger0=u(0, 12),
        blur=u(0.3, 0.8), noise=u(*site.noise), noise_lge=u(0.03, 0.06), level=u(*site.blood_level),
        slope=u(*site.slope) if site.slope else None, names=tuple(str(rng.choice(n)) for n in site.names),
        series=int(rng.integers(5, 20)), ti=u(280, 350), tr=(round(u(2.8, 3.6), 2), round(u(5.0, 8.5), 2)),
        te=(round(u(1.2, 1.6), 2), round(u(2.0, 3.4), 2)), sex=str(rng.choice(["M", "F"])),
        age=int(rng.integers(18, 80)),
        date=f"{rng.integers(2018, 2025)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
        time=f"{rng.integers(7, 19):02d}{rng.integers(0, 60):02d}00",
    )  # fmt: skip
    acq.n_slices = int(np.clip(math.ceil((heart.s_apex - acq.first) / acq.step), 9, 12))
    return Subject(f"fx-{index + 1:04d}", label, subtype, sev, site, heart, torso, acq, cine, lge)


# --------------------------------------------------------------------------------------------------- planes
@dataclass
class Plane:
    """One image plane: ImagePositionPatient (first pixel centre), the IOP cosines, matrix and spacing."""

    ipp: np.ndarray
    row: np.ndarray  # direction of increasing column index (IOP first triplet)
    col: np.ndarray  # direction of increasing row index (IOP second triplet)
    rows: int
    cols: int
    spacing: float

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    @property
    def centre(self) -> np.ndarray:
        return self.ipp + 0.5 * self.spacing * ((self.cols - 1) * self.row + (self.rows - 1) * self.col)

    def points(self) -> np.ndarray:
        """LPS position of every pixel, (rows, cols, 3)."""
        i = np.arange(self.rows) * self.spacing
        j = np.arange(self.cols) * self.spacing
        return self.ipp + i[:, None, None] * self.col + j[None, :, None] * self.row

    def crop(self, centre: np.ndarray, radius: float) -> tuple[int, int, int, int] | None:
        """Pixel box (r0, r1, c0, c1) covering a sphere's cross-section, None if the plane misses it."""
        q = centre - self.ipp
        dn = q @ self.normal
        if abs(dn) >= radius:
            return None
        rin = math.sqrt(radius**2 - dn**2) / self.spacing
        ci, cj = (q @ self.col) / self.spacing, (q @ self.row) / self.spacing
        r0, r1 = max(0, int(ci - rin) - 1), min(self.rows, int(ci + rin) + 2)
        c0, c1 = max(0, int(cj - rin) - 1), min(self.cols, int(cj + rin) + 2)
        return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def _plane(focus: np.ndarray, normal: np.ndarray, acq: Acquisition, rot: float) -> Plane:
    """A plane through `focus`: rows toward patient left, anterior at the top, rotated in-plane by `rot`; the
    FOV centre sits `acq.offset` from the focus toward the chest centre, as when planning on the chest."""
    row = _perp(X_HAT, normal)
    col = np.cross(normal, row)
    if col @ Y_HAT < 0:
        col = -col  # anterior up (this flips row x col)
    row, col = math.cos(rot) * row + math.sin(rot) * col, -math.sin(rot) * row + math.cos(rot) * col
    n = np.cross(row, col)
    toward = np.array([0.0, 0.0, focus[2]]) - focus
    toward = _unit(toward - (toward @ n) * n)
    centre = focus + acq.offset[0] * toward + acq.offset[1] * np.cross(n, toward)
    ipp = centre - 0.5 * acq.spacing * ((acq.cols - 1) * row + (acq.rows - 1) * col)
    return Plane(ipp, row, col, acq.rows, acq.cols, acq.spacing)


def sax_planes(subj: Subject) -> list[Plane]:
    """Short-axis stack from base to apex, perpendicular to the long axis, one in-plane geometry."""
    h, acq = subj.heart, subj.acq
    mid = _plane(subj.torso.mid, -h.w, acq, acq.rot_sax)
    s_mid = (subj.torso.mid - h.origin) @ h.w
    shifts = [(acq.first + k * acq.step - s_mid) * h.w for k in range(acq.n_slices)]
    return [Plane(mid.ipp + d, mid.row, mid.col, mid.rows, mid.cols, mid.spacing) for d in shifts]


def four_chamber_plane(subj: Subject) -> Plane:
    """A plane containing the LV long axis and the septal direction, slightly rotated about it and offset."""
    h, acq = subj.heart, subj.acq
    normal = math.cos(acq.tilt_4ch) * h.eb - math.sin(acq.tilt_4ch) * h.ea
    focus = 0.5 * (subj.torso.mid + subj.torso.base) + acq.shift_4ch * normal
    return _plane(focus, normal, acq, acq.rot_4ch)


class Renderer:
    """Renders frames of one plane: the static torso once, the heart per phase, then blur, shading, noise."""

    def __init__(self, subj: Subject, plane: Plane, tis: dict, noise: float, rng: np.random.Generator) -> None:
        self.subj, self.tis, self.noise, self.rng, self.pw = subj, tis, noise, rng, plane.spacing
        P = plane.points().astype(F32)
        self.bg = subj.torso.signal(P, tis, self.pw)
        self.bias = subj.torso.bias(P)
        self.box = plane.crop(*subj.torso.sphere)
        if self.box is not None:
            r0, r1, c0, c1 = self.box
            self.coords = subj.heart.frame_coords(P[r0:r1, c0:c1])

    def frame(self, phase: float, lge: bool = False) -> np.ndarray:
        """Magnitude image at a cardiac phase (fraction of R-R); cine blood ~ 1 at the heart."""
        img = self.bg.copy()
        if self.box is not None:
            r0, r1, c0, c1 = self.box
            acc, cov = self.subj.heart.render(self.coords, phase, self.tis, self.pw, lge)
            img[r0:r1, c0:c1] = acc + (1.0 - cov) * img[r0:r1, c0:c1]
        img = ndimage.gaussian_filter(img, self.subj.acq.blur, mode="nearest") * self.bias
        n = self.rng.standard_normal((2, *img.shape), dtype=F32) * self.noise
        return np.sqrt((img + n[0]) ** 2 + n[1] ** 2)  # Rician


# --------------------------------------------------------------------------------------------------- DICOM
def _uid(*parts: object) -> str:
    """A deterministic UID under the pydicom root."""
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _short(tag: int, vr: bytes, text: str) -> bytes:
    """One explicit VR little endian element with a 2-byte length (UI padded with NUL, text with space)."""
    value = text.encode("ascii")
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _file_meta(sop_uid: str) -> bytes:
    """Preamble, 'DICM' and the file meta group (PS3.10) of one MR image."""
    body = b"".join([
        struct.pack("<HH2s2xI", 0x0002, 0x0001, b"OB", 2) + b"\0\1",
        _short(0x00020002, b"UI", MRImageStorage),
        _short(0x00020003, b"UI", sop_uid),
        _short(0x00020010, b"UI", ExplicitVRLittleEndian),
        _short(0x00020012, b"UI", PYDICOM_IMPLEMENTATION_UID),
        _short(0x00020013, b"SH", "FX_COHORT_1"),
    ])  # fmt: skip
    return b"\0" * 128 + b"DICM" + struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _encode(tags: dict) -> dict[int, bytes]:
    """Explicit VR little endian bytes of each element (encoded by pydicom), keyed by tag."""
    ds = Dataset()
    for key, value in tags.items():
        setattr(ds, key, value)
    out = {}
    for elem in ds:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem)
        out[int(elem.tag)] = fp.getvalue()
    return out


def _series_tags(subj: Subject, seed: int, kind: str, number: int) -> dict:
    """Study, patient, equipment, sequence and image-format elements shared by the images of a series."""
    acq, site, num = subj.acq, subj.site, subj.sid.split("-")[1]
    t3 = site.tesla > 2
    level = acq.level * (0.75 if kind == "lge" else 1.0)
    tags = {
        "SpecificCharacterSet": "ISO_IR 100", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        "SOPClassUID": MRImageStorage, "StudyDate": acq.date, "SeriesDate": acq.date, "ContentDate": acq.date,
        "StudyTime": acq.time, "SeriesTime": acq.time, "AccessionNumber": f"FXA{num}", "Modality": "MR",
        "Manufacturer": site.manufacturer, "InstitutionName": "FOREIGN SYNTHETIC", "ReferringPhysicianName": "",
        "StudyDescription": "CARDIAC^CMR", "ManufacturerModelName": site.model, "PatientName": f"FX^{num}",
        "PatientID": f"FX{num}", "PatientBirthDate": "", "PatientSex": acq.sex, "PatientAge": f"{acq.age:03d}Y",
        "BodyPartExamined": "HEART", "MRAcquisitionType": "2D", "SliceThickness": _fmt(SLICE_THICKNESS),
        "NumberOfAverages": "1", "ImagingFrequency": _fmt(42.577 * site.tesla), "ImagedNucleus": "1H",
        "MagneticFieldStrength": _fmt(site.tesla), "SpacingBetweenSlices": _fmt(acq.step),
        "PercentSampling": "100", "PercentPhaseFieldOfView": _fmt(100.0 * acq.rows / acq.cols),
        "HeartRate": str(round(acq.hr)), "NominalInterval": str(round(acq.rr)),
        "AcquisitionMatrix": [0, acq.cols, acq.rows, 0], "InPlanePhaseEncodingDirection": "COL",
        "PatientPosition": "HFS", "StudyInstanceUID": _uid(seed, subj.sid, "study"),
        "SeriesInstanceUID": _uid(seed, subj.sid, kind), "StudyID": num, "SeriesNumber": number,
        "FrameOfReferenceUID": _uid(seed, subj.sid, "for"), "PositionReferenceIndicator": "",
        "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "Rows": acq.rows, "Columns": acq.cols,
        "BitsAllocated": 16, "BitsStored": site.bits_stored, "HighBit": site.bits_stored - 1,
        "PixelRepresentation": 0, "WindowCenter": _fmt(0.5 * level), "WindowWidth": _fmt(1.2 * level),
    }  # fmt: skip
    if acq.slope:
        tags |= {"RescaleIntercept": "0", "RescaleSlope": _fmt(acq.slope), "RescaleType": "US"}
    if kind == "lge":
        name = acq.names[2]
        trigger = _fmt(round(acq.rr * subj.heart.cycle.mid_diastole, 1))
        tags |= {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"], "ScanOptions": ["IR", "CG"],
                 "SequenceName": "*tfl2d1", "RepetitionTime": _fmt(acq.tr[1]), "EchoTime": _fmt(acq.te[1]),
                 "InversionTime": _fmt(round(acq.ti, 1)), "FlipAngle": "20" if t3 else "25",
                 "TriggerTime": trigger, "CardiacNumberOfImages": 1}  # fmt: skip
    else:
        name = acq.names[0 if kind == "sax" else 1]
        tags |= {"ScanningSequence": "GR", "SequenceVariant": ["SK", "SS"], "ScanOptions": "CG",
                 "SequenceName": f"*tfi2d1_{acq.frames}", "RepetitionTime": _fmt(acq.tr[0]),
                 "EchoTime": _fmt(acq.te[0]), "FlipAngle": "45" if t3 else "60",
                 "CardiacNumberOfImages": acq.frames}  # fmt: skip
    return tags | {"SeriesDescription": name, "ProtocolName": name}


class SeriesWriter:
    """Writes the images of one series, one single-frame file each. The series-constant elements are encoded
    once (by pydicom); each file adds only its own UID, number, geometry, trigger time and pixels."""

    def __init__(self, subj: Subject, seed: int, folder: Path, kind: str, number: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.subj, self.seed, self.folder, self.kind, self.count = subj, seed, folder, kind, 0
        self.scale = subj.acq.level * (0.75 if kind == "lge" else 1.0) / (subj.acq.slope or 1.0)
        self.max = (1 << subj.site.bits_stored) - 1
        self.fixed = _encode(_series_tags(subj, seed, kind, number))

    def add(self, image: np.ndarray, plane: Plane, trigger: float | None = None) -> None:
        self.count += 1
        sop = _uid(self.seed, self.subj.sid, self.kind, self.count)
        ds = "\\".join
        own = {
            0x00080018: _short(0x00080018, b"UI", sop),
            0x00200013: _short(0x00200013, b"IS", str(self.count)),
            0x00200032: _short(0x00200032, b"DS", ds(_fmt(v) for v in plane.ipp)),
            0x00200037: _short(0x00200037, b"DS", ds(_fmt(v) for v in (*plane.row, *plane.col))),
            0x00201041: _short(0x00201041, b"DS", _fmt(float(plane.centre @ plane.normal))),
            0x00280030: _short(0x00280030, b"DS", ds([_fmt(plane.spacing)] * 2)),
        }
        if trigger is not None:
            own[0x00181060] = _short(0x00181060, b"DS", _fmt(round(trigger, 2)))
        pixels = np.clip(np.rint(image * self.scale), 0, self.max).astype("<u2").tobytes()
        body = b"".join(v for _, v in sorted((self.fixed | own).items()))
        head = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", len(pixels))
        (self.folder / f"IM{self.count:05d}.dcm").write_bytes(_file_meta(sop) + body + head + pixels)


# --------------------------------------------------------------------------------------------------- cohort
def render_subject(subj: Subject, out: Path, seed: int, with_lge: bool = True) -> dict:
    """Write the subject's series under out/<sid>/ and return its manifest row."""
    acq, sid = subj.acq, subj.sid
    rng = np.random.default_rng([seed, int(sid.split("-")[1]), 29])
    triggers = [acq.trigger0 + k * acq.rr / acq.frames for k in range(acq.frames)]
    sax = sax_planes(subj)

    plane = four_chamber_plane(subj)
    writer = SeriesWriter(subj, seed, out / sid / "cine_4ch", "4ch", acq.series)
    rend = Renderer(subj, plane, subj.tis_cine, acq.noise, rng)
    for t in triggers:
        writer.add(rend.frame(t / acq.rr), plane, t)

    writer = SeriesWriter(subj, seed, out / sid / "sax_cine", "sax", acq.series + 1)
    for plane in sax:
        rend = Renderer(subj, plane, subj.tis_cine, acq.noise, rng)
        for t in triggers:
            writer.add(rend.frame(t / acq.rr), plane, t)

    if with_lge:
        writer = SeriesWriter(subj, seed, out / sid / "lge_sax", "lge", acq.series + 7)
        for plane in sax:
            rend = Renderer(subj, plane, subj.tis_lge, acq.noise_lge, rng)
            writer.add(rend.frame(subj.heart.cycle.mid_diastole, lge=True), plane)
    return {"subject_id": sid, "label": subj.label, "subtype": subj.subtype, "cine_4ch": f"{sid}/cine_4ch",
            "cine_sax": f"{sid}/sax_cine", "lge_sax": f"{sid}/lge_sax" if with_lge else ""}  # fmt: skip


def assign_labels(subjects: int, seed: int) -> list[tuple[int, str]]:
    """Half healthy, half cardiomyopathy (subtype shares by largest remainder), shuffled by seed."""
    n_dis = subjects // 2
    raw = np.array(SUBTYPE_SHARES) * n_dis
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n_dis - counts.sum()]:
        counts[k] += 1
    labels = [(0, "")] * (subjects - n_dis) + [(1, t) for t, n in zip(SUBTYPES, counts, strict=True) for _ in range(n)]
    return [labels[i] for i in np.random.default_rng([seed, 7]).permutation(subjects)]


def _job(args: tuple[Path, int, int, int, str, bool]) -> dict:
    out, seed, index, label, subtype, with_lge = args
    return render_subject(make_subject(seed, index, label, subtype), out, seed, with_lge)


def write_cohort(out: Path, subjects: int, seed: int, lge_fraction: float = 1.0, workers: int = 1) -> list[dict]:
    """Generate the cohort under `out`, write out/manifest.csv and return its rows. A subject depends only on
    (seed, index, label), so the output is the same for any `workers`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (out, seed, i, label, subtype, bool(np.random.default_rng([seed, i, 3]).random() < lge_fraction))
        for i, (label, subtype) in enumerate(assign_labels(subjects, seed))
    ]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(_job, jobs))
    else:
        rows = [_job(job) for job in jobs]
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a foreign synthetic cardiac MR DICOM cohort.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--subjects", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lge-fraction", type=float, default=1.0, help="share of subjects given an LGE series")
    parser.add_argument("--workers", type=int, default=1, help="processes, one subject per task")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = write_cohort(args.out, args.subjects, args.seed, args.lge_fraction, args.workers)
    sick = sum(row["label"] for row in rows)
    print(f"wrote {len(rows)} subjects ({sick} cardiomyopathy) to {args.out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
