"""Render image planes of a synthetic subject: body and heart tissue fractions, MR contrast, bias field, Rician noise.

Patient coordinates are DICOM LPS (mm). A `Layout` places the body and the heart; a `Plane` is one image slice.
The static body is evaluated once per plane; the beating heart only inside a bounding box around it, per frame.
Contrasts: bSSFP cine (bright blood, dark myocardium, bright fat) and inversion-recovery LGE (nulled myocardium,
grey blood, bright scar), both magnitude images with Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cccmr_model.phantom.anatomy import Heart, HeartSampler, state

# Tissue signal relative to cine blood; LGE myocardium/blood/scar are further scaled per subject (Heart.lge_*).
CONTRAST: dict[str, dict[str, float]] = {
    "cine": {
        "blood": 1.0, "myo": 0.27, "fat": 0.85, "soft": 0.3, "lung": 0.045, "liver": 0.36, "abdomen": 0.5,
        "bone": 0.3, "csf": 0.9, "muscle": 0.24, "scar": 0.27,
    },
    "lge": {
        "blood": 0.42, "myo": 0.03, "fat": 0.5, "soft": 0.2, "lung": 0.03, "liver": 0.3, "abdomen": 0.22,
        "bone": 0.15, "csf": 0.3, "muscle": 0.1, "scar": 1.0,
    },
}  # fmt: skip
HEART_TISSUE = {
    "lv_blood": "blood", "rv_blood": "blood", "la": "blood", "ra": "blood",
    "myo": "myo", "rv_wall": "myo", "atrial_wall": "myo", "fat": "fat",
}  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Where the body and the heart are in patient space."""

    body_center: np.ndarray  # 3
    body_scale: float
    heart_origin: np.ndarray  # 3: centre of the mitral valve plane at end-diastole
    axes: np.ndarray  # 3 x 3 rows: e1 (towards the RV), e2 (y, superior-anterior), n (long axis, base to apex)

    def to_heart(self, points: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
        origin = self.heart_origin if shift is None else self.heart_origin + shift
        return (points - origin) @ self.axes.T


@dataclass(frozen=True)
class Plane:
    origin: np.ndarray  # ImagePositionPatient of pixel (0, 0)
    row: np.ndarray  # direction of increasing column index
    col: np.ndarray  # direction of increasing row index
    rows: int
    cols: int
    spacing: float  # mm, square pixels

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    def points(self) -> np.ndarray:
        """Patient coordinates of every pixel centre, (rows, cols, 3)."""
        r = np.arange(self.rows, dtype=np.float32)[:, None, None] * self.spacing
        c = np.arange(self.cols, dtype=np.float32)[None, :, None] * self.spacing
        return (self.origin[None, None] + c * self.row[None, None] + r * self.col[None, None]).astype(np.float32)

    @classmethod
    def centred(cls, center: np.ndarray, row: np.ndarray, col: np.ndarray, size: int, spacing: float) -> Plane:
        half = (size - 1) / 2.0 * spacing
        return cls(center - half * row - half * col, row, col, size, size, spacing)


def _frac(distance: np.ndarray, edge: float) -> np.ndarray:
    return np.clip(0.5 - distance / edge, 0.0, 1.0)


def _ellipse(p: np.ndarray, center, radii) -> np.ndarray:
    q = np.sqrt(sum(((p[..., i] - c) / r) ** 2 for i, (c, r) in enumerate(zip(center, radii, strict=False))))
    return (q - 1.0) * min(radii)


def body_tissues(points: np.ndarray, layout: Layout, edge: float) -> list[tuple[str, np.ndarray]]:
    """Body tissue layers (name, alpha), back to front, at patient points (..., 3)."""
    s = layout.body_scale
    p = (points - layout.body_center) / s
    e = edge / s
    layers = [
        ("soft", _frac(_ellipse(p, (0, 0), (165, 115)), e)),
        ("lung", _frac(_ellipse(p, (62, 22, 30), (68, 88, 125)), e)),
        ("lung", _frac(_ellipse(p, (-66, 18, 35), (68, 88, 130)), e)),
        ("liver", _frac(_ellipse(p, (-45, 10, -135), (130, 100, 115)), e)),
        ("abdomen", _frac(_ellipse(p, (75, 25, -125), (70, 75, 85)), e)),
        ("blood", _frac(_ellipse(p, (22, 62), (11, 11)), e)),  # descending aorta
        ("bone", _frac(_ellipse(p, (0, 88), (19, 17)), e)),  # vertebral body
        ("csf", _frac(_ellipse(p, (0, 112), (7, 8)), e)),  # spinal canal
        ("muscle", _frac(-_ellipse(p, (0, 0), (148, 98)), e) * _frac(_ellipse(p, (0, 0), (165, 115)), e)),
        ("fat", _frac(-_ellipse(p, (0, 0), (157, 107)), e) * _frac(_ellipse(p, (0, 0), (165, 115)), e)),
    ]
    return layers


def compose(layers: list[tuple[str, np.ndarray]], contrast: dict[str, float]) -> np.ndarray:
    image = np.zeros(layers[0][1].shape, np.float32)
    for tissue, alpha in layers:
        image = image * (1.0 - alpha) + alpha * contrast[tissue]
    return image


def heart_image(fractions: dict[str, np.ndarray], contrast: dict[str, float], heart: Heart, lge: bool):
    """Signal of the heart's tissues and their total fraction."""
    total = np.zeros_like(fractions["myo"])
    image = np.zeros_like(total)
    for name, tissue in HEART_TISSUE.items():
        value = contrast[tissue]
        if lge and tissue == "blood":
            value *= heart.lge_blood
        if lge and tissue == "myo":
            value += heart.lge_myo
        image += value * fractions[name]
        total += fractions[name]
    if lge:
        image += (contrast["scar"] - contrast["myo"] - heart.lge_myo) * fractions["scar"]
    return image, total


def heart_box(heart: Heart) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Bounds (x, y, z) in heart coordinates (mm) that contain the heart at every phase."""
    wall = max(heart.wall, heart.septal_wall)
    atrium = max(heart.la_radius, heart.ra_radius) * 1.2
    lv = heart.lv_radius + wall + 3.0 * heart.fat + 6.0
    rv = heart.lv_radius + wall + heart.rv_width * 1.3 + heart.rv_wall + 3.0 * heart.fat + 12.0
    ra = heart.lv_radius + heart.wall + 0.6 * heart.rv_width + 2.0 + atrium + 6.0
    bulge = heart.rv_bulge[2] if heart.rv_bulge else 0.0
    x = (-max(lv, atrium + 12.0), max(rv, ra) + bulge)
    y = (
        -max(lv, rv - heart.lv_radius * 0.5, atrium + 6.0) - bulge,
        max(lv, rv - heart.lv_radius * 0.5, atrium + 6.0) + bulge,
    )
    z = (-2.0 * atrium * 1.3 - 8.0, heart.lv_length + heart.apex_wall + 6.0)
    return x, y, z


def render_planes(
    heart: Heart,
    layout: Layout,
    planes: list[Plane],
    phases: np.ndarray,
    kind: str,
    *,
    heart_shift: np.ndarray | None = None,
    thickness: float = 8.0,
    samples: int = 1,
) -> np.ndarray:
    """Noise-free images (slices, frames, rows, cols) float32 of `planes` at cardiac `phases` (0..1)."""
    contrast = CONTRAST[kind]
    lge = kind == "lge"
    states = [state(heart, float(p)) for p in phases]
    out = np.empty((len(planes), len(phases), planes[0].rows, planes[0].cols), np.float32)
    (x0, x1), (y0, y1), (z0, z1) = heart_box(heart)
    for k, plane in enumerate(planes):
        points = plane.points()
        background = compose(body_tissues(points, layout, plane.spacing), contrast)
        out[k] = background[None]
        h = layout.to_heart(points, heart_shift)
        slab = thickness / 2.0
        near = (h[..., 0] > x0) & (h[..., 0] < x1) & (h[..., 1] > y0) & (h[..., 1] < y1)
        near &= (h[..., 2] > z0 - slab) & (h[..., 2] < z1 + slab)
        if not near.any():
            continue
        rr, cc = np.nonzero(near.any(axis=1))[0], np.nonzero(near.any(axis=0))[0]
        box = (slice(rr[0], rr[-1] + 1), slice(cc[0], cc[-1] + 1))
        hb = h[box]
        normal_h = (layout.axes @ plane.normal).astype(np.float32)
        offsets = (np.arange(samples) - (samples - 1) / 2.0) * (thickness / max(samples, 1))
        samplers = [HeartSampler(heart, *np.moveaxis(hb + np.float32(o) * normal_h, -1, 0)) for o in offsets]
        bg = background[box]
        for f, st in enumerate(states):
            acc_img = np.zeros(bg.shape, np.float32)
            acc_tot = np.zeros(bg.shape, np.float32)
            for sampler in samplers:
                img, tot = heart_image(sampler.fractions(st, plane.spacing, scar=lge), contrast, heart, lge)
                acc_img += img
                acc_tot += tot
            tot = np.clip(acc_tot / len(samplers), 0.0, 1.0)
            out[k, f][box] = acc_img / len(samplers) + (1.0 - tot) * bg
    return out


def bias_field(planes: list[Plane], rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative coil sensitivity (slices, rows, cols): brighter anteriorly, near 1 at the centre."""
    coeffs = rng.normal(0.0, 0.12, 5) * strength
    anterior = rng.uniform(0.25, 0.55) * strength
    fields = []
    for plane in planes:
        v, u = np.meshgrid(np.linspace(-1, 1, plane.rows), np.linspace(-1, 1, plane.cols), indexing="ij")
        poly = coeffs[0] * u + coeffs[1] * v + coeffs[2] * u**2 + coeffs[3] * v**2 + coeffs[4] * u * v
        y_patient = plane.points()[..., 1]
        center_y = y_patient[plane.rows // 2, plane.cols // 2]
        fields.append(np.exp(poly - anterior * (y_patient - center_y) / 120.0))
    return np.asarray(fields, np.float32)


def add_rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of std `sigma` per channel.

    For speed, each frame's noise is a random window of a per-series pool of Gaussian samples (a few frames
    large) rather than fresh samples: the same statistics at a fraction of the random draws.
    """
    frame = int(np.prod(image.shape[-2:]))
    count = int(np.prod(image.shape[:-2]))
    pool = rng.standard_normal(2 * frame * min(count, 4) + frame, dtype=np.float32) * np.float32(sigma)
    starts = rng.integers(0, pool.size - 2 * frame + 1, count)
    flat = image.reshape(count, frame)
    out = np.empty_like(flat)
    for i, start in enumerate(starts):
        real = flat[i] + pool[start : start + frame]
        imag = pool[start + frame : start + 2 * frame]
        out[i] = np.sqrt(real * real + imag * imag)
    return out.reshape(image.shape)


def blur(images: np.ndarray) -> np.ndarray:
    """The point-spread of a finite k-space acquisition, approximated by a [1, 2, 1] / 4 kernel along rows and cols."""
    out = images * np.float32(0.5)
    out[..., 1:, :] += images[..., :-1, :] * np.float32(0.25)
    out[..., :-1, :] += images[..., 1:, :] * np.float32(0.25)
    once = out
    out = once * np.float32(0.5)
    out[..., :, 1:] += once[..., :, :-1] * np.float32(0.25)
    out[..., :, :-1] += once[..., :, 1:] * np.float32(0.25)
    return out
