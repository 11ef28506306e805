"""An analytic beating heart: geometry, motion and scar of one synthetic subject (numpy only).

Heart coordinates (mm): z along the LV long axis from the mitral valve plane at end-diastole (z = 0) to the apex,
x towards the right ventricle, y = z cross x. The LV is a truncated half-ellipsoid whose endocardial radius follows a
volume curve (ejection and filling, with regional hypokinesis), the myocardium keeps its cross-sectional area
(so it thickens in systole), the RV is a crescent on the septal side and the atria are ellipsoids above the valve
plane. Scar is a set of patches in (angle, long-axis position, transmural depth). Everything is evaluated on
arrays of points, so one function renders any plane (short axis, 4-chamber) and a 3D grid for the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TAU = 2.0 * np.pi
BASAL_NARROWING = 0.15  # the LV narrows towards the mitral annulus
PAPILLARY_ANGLES = (-2.3, 2.0)  # inferomedial and anterolateral, rad from the septum


@dataclass(frozen=True)
class ScarPatch:
    """Enhancement in a window of angle (rad, around `theta`), long-axis fraction u and transmural depth rho."""

    theta: float
    half_width: float  # rad; >= pi means the whole circumference
    u_range: tuple[float, float]
    rho_range: tuple[float, float]  # 0 endocardium .. 1 epicardium
    intensity: float  # 0..1 of fully enhanced
    patchiness: float = 0.0  # 0 continuous .. 1 spotty
    phase: float = 0.0  # of the patchiness pattern
    rv: bool = False  # in the RV free wall instead of the LV myocardium


@dataclass(frozen=True)
class Heart:
    """One subject's heart at end-diastole plus how it moves."""

    lv_radius: float  # endocardial semi-axis at the base, mm
    lv_length: float  # base plane to endocardial apex, mm
    wall: float  # LV wall thickness away from the septum, mm
    septal_wall: float  # septal thickness, mm
    septal_width: float  # angular half-width of the septal thickening, rad
    apex_wall: float
    rv_width: float  # RV cavity width at the base, mm
    rv_insertion: float  # angle of the RV insertion points from the septal centre, rad
    rv_length: float  # RV length as a fraction of LV length
    rv_wall: float
    rv_ef: float
    la_radius: float
    ra_radius: float
    ef: float  # nominal (global) ejection fraction driving the volume curve
    heart_rate: float  # beats per minute
    systole: float = 0.35  # fraction of the cycle to end-systole
    early_filling: float = 0.7  # share of the stroke volume refilled in early diastole
    filling_speed: float = 1.0  # >1 faster early filling
    hypokinesis: tuple[tuple[float, float, float], ...] = ()  # (theta, half_width, motion factor)
    rv_bulge: tuple[float, float, float] | None = None  # (theta, half_width, mm outward at end-systole)
    scars: tuple[ScarPatch, ...] = ()
    lge_blood: float = 1.0  # blood-pool signal scale on LGE (amyloid: dark blood)
    lge_myo: float = 0.0  # residual signal of remote myocardium on LGE (imperfect nulling)
    fat: float = 2.5  # epicardial fat thickness, mm
    extras: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HeartState:
    """The time-varying geometry at one cardiac phase."""

    fill: float  # 1 at end-diastole, 0 at end-systole
    lv_radius: float
    lv_length: float
    base: float  # z of the valve plane
    rv_width: float
    atrial_scale: float


def fill_curve(heart: Heart, phase: np.ndarray | float) -> np.ndarray:
    """Fraction of the stroke volume in the LV over the cycle (phase 0..1): 1 at end-diastole, 0 at end-systole."""
    phase = np.mod(np.asarray(phase, float), 1.0)
    ts = heart.systole
    systole = 0.5 * (1 + np.cos(np.pi * np.clip(phase / ts, 0, 1)))
    early_end = ts + 0.2 / heart.filling_speed
    early = _smooth((phase - ts) / (early_end - ts))
    atrial = _smooth((phase - 0.8) / 0.14)
    diastole = heart.early_filling * early + (1 - heart.early_filling) * atrial
    return np.where(phase < ts, systole, diastole)


def state(heart: Heart, phase: float) -> HeartState:
    fill = float(fill_curve(heart, phase))
    volume = 1.0 - heart.ef * (1.0 - fill)  # V / EDV
    length = heart.lv_length * volume**0.18
    radius = heart.lv_radius * np.sqrt(volume / (length / heart.lv_length))
    rv_width = heart.rv_width * (1.0 - heart.rv_ef * (1.0 - fill)) ** 0.8
    return HeartState(
        fill=fill,
        lv_radius=float(radius),
        lv_length=float(length),
        base=float(heart.lv_length - length),
        rv_width=float(rv_width),
        atrial_scale=float(1.0 + 0.12 * (1.0 - fill)),
    )


def _smooth(x: np.ndarray) -> np.ndarray:
    """Smoothstep 0 -> 1 over x in [0, 1]."""
    x = np.minimum(np.maximum(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(theta: np.ndarray, center: float, half_width: float) -> np.ndarray:
    """1 at `center`, falling smoothly to 0 at +-half_width (angles in rad)."""
    if half_width >= np.pi:
        return np.ones_like(theta)
    d = np.abs(np.mod(theta - center + np.pi, TAU) - np.pi)
    return np.cos(0.5 * np.pi * np.minimum(d / half_width, 1.0)) ** 2


def _frac(distance: np.ndarray, edge: float) -> np.ndarray:
    """Partial-volume fraction inside a surface from a signed distance (mm, negative inside)."""
    return np.clip(0.5 - distance / edge, 0.0, 1.0)


def wall_thickness(heart: Heart, theta: np.ndarray) -> np.ndarray:
    """End-diastolic LV wall thickness (mm) at the base, at angle theta (0 = septum)."""
    return heart.wall + (heart.septal_wall - heart.wall) * _bump(theta, 0.0, heart.septal_width)


def motion_factor(heart: Heart, theta: np.ndarray) -> np.ndarray:
    factor = np.ones_like(theta)
    for center, half_width, amount in heart.hypokinesis:
        factor = factor - (1.0 - amount) * _bump(theta, center, half_width)
    return factor


def lv_radii(heart: Heart, st: HeartState, theta, z, motion=None, wall=None) -> tuple[np.ndarray, ...]:
    """Endocardial and epicardial radius (mm) and long-axis fraction u at points (theta, z).

    The endocardium is a half-ellipsoid moving with the volume curve (regional `motion` factor); the epicardium at
    end-diastole is a half-ellipsoid longer by the apical wall, and each level keeps its myocardial area.
    """
    motion = motion_factor(heart, theta) if motion is None else motion
    wall = wall_thickness(heart, theta) if wall is None else wall
    u = (z - st.base) / st.lv_length
    taper = np.sqrt(np.clip(1.0 - u * u, 0.0, None)) * (1.0 - BASAL_NARROWING * _smooth((0.25 - u) / 0.25))
    endo_ed = taper * heart.lv_radius
    endo = endo_ed - taper * (heart.lv_radius - st.lv_radius) * motion
    u_epi = u * (heart.lv_length / (heart.lv_length + heart.apex_wall))
    epi_ed = (heart.lv_radius + wall) * np.sqrt(np.clip(1.0 - u_epi * u_epi, 0.0, None))
    epi = np.sqrt(np.clip(endo * endo + epi_ed * epi_ed - endo_ed * endo_ed, 0.0, None))
    return endo, epi, u


class HeartSampler:
    """The heart at a fixed set of points (heart coordinates); `fractions(state)` per cardiac phase.

    Everything that depends only on the point (radius, angle, angular profiles of wall, motion, fat, scar) is
    computed once here.
    """

    def __init__(self, heart: Heart, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        self.heart = heart
        self.x, self.y, self.z = x, y, z
        self.r = np.hypot(x, y)
        self.theta = np.arctan2(y, x)
        self.motion = motion_factor(heart, self.theta)
        self.wall = wall_thickness(heart, self.theta)
        grooves = _bump(self.theta, heart.rv_insertion, 0.5) + _bump(self.theta, -heart.rv_insertion, 0.5)
        self.fat = heart.fat * (1.0 + 0.8 * grooves)
        self.bulge = None
        if heart.rv_bulge is not None:
            center, half_width, amount = heart.rv_bulge
            self.bulge = amount * _bump(self.theta, center, half_width)
        self.cos_insertion = float(np.cos(heart.rv_insertion))
        atria_reach = 2.6 * max(heart.la_radius, heart.ra_radius) * 1.4
        self.has_atria = bool((z < heart.lv_length * 0.2).any() and (z > -atria_reach).any())

    def fractions(self, st: HeartState, edge: float, scar: bool = False) -> dict[str, np.ndarray]:
        """Tissue fractions: lv_blood, myo, rv_blood, rv_wall, la, ra, atrial_wall, fat (and scar if asked)."""
        heart, r, x, y, z = self.heart, self.r, self.x, self.y, self.z
        endo, epi, u = lv_radii(heart, st, self.theta, z, self.motion, self.wall)
        below = _frac(st.base - z, edge)
        lv_all = _frac(r - epi, edge) * below * (epi > 0.0)
        lv_blood = _frac(r - endo, edge) * below * (endo > 0.0)
        papillary = self._papillary(st, endo, u, edge) * lv_blood
        lv_blood = lv_blood - papillary
        myo = lv_all - lv_blood
        out = {"lv_blood": lv_blood, "myo": myo}
        # right ventricle: a crescent between the LV epicardium and a circle centred towards +x
        u_rv = u / heart.rv_length
        width = st.rv_width * np.sqrt(np.clip(1.0 - u_rv * u_rv, 0.0, None))
        if self.bulge is not None:
            width = width + self.bulge * (1.0 - st.fill) * (width > 0)
        outer = np.maximum(epi, 1.0)
        d = ((outer + width) ** 2 - outer * outer) / np.maximum(
            2.0 * (outer + width - outer * self.cos_insertion), 1e-3
        )
        dist = np.hypot(x - d, y) - (outer + width - d)
        rv_on = (width > 0.5) * below * (1.0 - lv_all)
        rv_blood = _frac(dist, edge) * rv_on
        rv_all = _frac(dist - heart.rv_wall, edge) * rv_on
        out["rv_blood"] = rv_blood
        out["rv_wall"] = rv_all - rv_blood
        beyond_apex = z - st.base - st.lv_length * (1.0 + heart.apex_wall / heart.lv_length)
        lv_d = np.where(epi > 0.0, r - epi, np.hypot(r, np.maximum(beyond_apex, 0.0)))
        heart_d = np.minimum(lv_d, np.where(width > 0.5, dist - heart.rv_wall, np.inf))
        fat = self.fat * (1.0 - 0.8 * _smooth((u - 0.7) / 0.3))  # little fat over the apex
        out["fat"] = np.clip(_frac(heart_d - fat, edge) * below - lv_all - rv_all, 0.0, 1.0)
        zeros = np.zeros_like(r)
        out["la"] = out["ra"] = out["atrial_wall"] = zeros
        if self.has_atria and (z < st.base + edge).any():
            self._atria(st, edge, 1.0 - below, out)
        if scar:
            out["scar"] = _scar(heart, self.theta, u, r, endo, epi) * myo
            rv_scar = _rv_scar(heart, self.theta, u)
            if rv_scar is not None:
                out["scar"] = out["scar"] + rv_scar * out["rv_wall"]
        return out

    def _papillary(self, st: HeartState, endo: np.ndarray, u: np.ndarray, edge: float) -> np.ndarray:
        """Two papillary muscles in the mid ventricle, near the wall, thicker in systole."""
        total = np.zeros_like(endo)
        if u.max() <= 0.25 or u.min() >= 0.8:
            return total
        along = _smooth((u - 0.25) / 0.1) * _smooth((0.8 - u) / 0.1)
        radius = 4.0 + 1.5 * (1.0 - st.fill)
        for angle in PAPILLARY_ANGLES:
            center = np.maximum(endo - radius - 1.0, 0.0)
            d = np.hypot(self.x - center * np.cos(angle), self.y - center * np.sin(angle)) - radius
            total = np.maximum(total, _frac(d, edge))
        return total * along

    def _atria(self, st: HeartState, edge: float, above: np.ndarray, out: dict[str, np.ndarray]) -> None:
        heart, x, y, z = self.heart, self.x, self.y, self.z
        s = st.atrial_scale
        la_r, ra_r = heart.la_radius * s, heart.ra_radius * s
        la_rz, ra_rz = la_r * 1.3, ra_r * 1.2
        la = _ellipsoid(x + 6.0, y, z - (st.base - 0.68 * la_rz), la_r, la_r * 0.9, la_rz)
        ra_x = heart.lv_radius + heart.wall + 0.6 * heart.rv_width + 2.0
        ra = _ellipsoid(x - ra_x, y, z - (st.base - 0.68 * ra_rz), ra_r, ra_r * 0.9, ra_rz)
        la_in, la_wall = _frac(la, edge), _frac(la - 2.0, edge)
        ra_in, ra_wall = _frac(ra, edge), _frac(ra - 2.0, edge)
        out["la"] = la_in * above
        out["ra"] = ra_in * (1.0 - la_wall) * above
        out["atrial_wall"] = np.clip(np.maximum(la_wall, ra_wall) * above - out["la"] - out["ra"], 0.0, 1.0)


def evaluate(heart: Heart, st: HeartState, x, y, z, edge: float, scar: bool = True) -> dict[str, np.ndarray]:
    """Tissue fractions of the heart at points (x, y, z) in heart coordinates; `edge` = pixel size (mm)."""
    return HeartSampler(heart, x, y, z).fractions(st, edge, scar)


def _ellipsoid(x, y, z, a, b, c) -> np.ndarray:
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    return (q - 1.0) * min(a, b, c)


def _patch_weight(patch: ScarPatch, theta: np.ndarray, u: np.ndarray) -> np.ndarray:
    ang = _bump(theta, patch.theta, patch.half_width)
    lo, hi = patch.u_range
    along = _smooth((u - lo) / 0.08) * _smooth((hi - u) / 0.08)
    weight = np.clip(ang * 1.6, 0, 1) * along
    if patch.patchiness > 0:
        pattern = 0.5 + 0.5 * np.sin(3 * theta + patch.phase) * np.cos(7 * np.pi * u + 2 * patch.phase)
        weight = weight * np.clip((pattern - patch.patchiness * 0.5) * 4.0, 0, 1)
    return weight


def _scar(heart: Heart, theta, u, r, endo, epi) -> np.ndarray:
    scar = np.zeros_like(r)
    if not heart.scars:
        return scar
    rho = np.clip((r - endo) / np.maximum(epi - endo, 1e-3), 0.0, 1.0)
    for patch in heart.scars:
        if patch.rv:
            continue
        lo, hi = patch.rho_range
        depth = _smooth((rho - lo) / 0.12 + 0.5) * _smooth((hi - rho) / 0.12 + 0.5)
        scar = np.maximum(scar, patch.intensity * depth * _patch_weight(patch, theta, u))
    return scar


def _rv_scar(heart: Heart, theta, u) -> np.ndarray | None:
    patches = [p for p in heart.scars if p.rv]
    if not patches:
        return None
    return np.max([p.intensity * _patch_weight(p, theta, u) for p in patches], axis=0)


# ---------------------------------------------------------------- ground truth


def lv_volume(heart: Heart, phase: float, n_theta: int = 96, n_z: int = 160) -> float:
    """LV cavity volume (mL) at one phase, integrated over the analytic surface."""
    st = state(heart, phase)
    theta = np.linspace(-np.pi, np.pi, n_theta, endpoint=False)[:, None]
    z = np.linspace(st.base, st.base + st.lv_length, n_z)[None, :]
    endo, *_ = lv_radii(heart, st, theta, z)
    area = 0.5 * (endo**2).mean(axis=0) * TAU  # mm^2 per z
    return float(np.trapezoid(area, z[0]) / 1000.0)


def ground_truth(heart: Heart, frames: int, lge_phase: float) -> dict[str, float]:
    """EDV, ESV, EF (from the frames actually imaged), wall thickness and LGE burden of one heart."""
    phases = np.arange(frames) / frames
    volumes = np.asarray([lv_volume(heart, p) for p in phases])
    edv, esv = float(volumes.max()), float(volumes.min())
    theta = np.linspace(-np.pi, np.pi, 180, endpoint=False)
    st = state(heart, 0.0)
    thickness = {}
    for name, u in (("base", 0.1), ("mid", 0.5)):
        endo, epi, _ = lv_radii(heart, st, theta, np.full_like(theta, u * heart.lv_length))
        thickness[name] = epi - endo
    mid, base = thickness["mid"], thickness["base"]
    return {
        "edv_ml": round(edv, 2),
        "esv_ml": round(esv, 2),
        "ef": round((edv - esv) / edv, 4),
        "es_frame": int(volumes.argmin()),
        "max_wall_thickness_mm": round(float(max(mid.max(), base.max())), 2),
        "mean_wall_thickness_mm": round(float(mid.mean()), 2),
        "lge_burden": round(lge_burden(heart, lge_phase), 4),
    }


def lge_burden(heart: Heart, phase: float, step: float = 1.5) -> float:
    """Fraction of LV myocardial volume enhanced (scar signal > 0.5) at the LGE phase."""
    if not any(not p.rv for p in heart.scars):
        return 0.0
    st = state(heart, phase)
    extent = heart.lv_radius + heart.septal_wall + 4.0
    xs = np.arange(-extent, extent, step)
    zs = np.arange(st.base, st.base + st.lv_length + heart.apex_wall, step)
    x, y = np.meshgrid(xs, xs, indexing="ij")
    enhanced = total = 0.0
    for z in zs:
        r, theta = np.hypot(x, y), np.arctan2(y, x)
        zz = np.full_like(x, z)
        endo, epi, u = lv_radii(heart, st, theta, zz)
        myo = (r >= endo) & (r < epi)
        scar = _scar(heart, theta, u, r, endo, epi)
        total += myo.sum()
        enhanced += (myo & (scar > 0.5)).sum()
    return float(enhanced / total) if total else 0.0
