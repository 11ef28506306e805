"""A PNG montage of a generated cohort for a person to look at: cine SAX at ED and ES, 4CH at ED and ES, LGE."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom

from cccmr_model.errors import DataError


def read_series(path: Path) -> np.ndarray:
    """(slices, frames, rows, cols) float32 of a phantom series, ordered along the slice normal and by time."""
    if path.is_file():
        ds = pydicom.dcmread(path)
        frames = ds.PerFrameFunctionalGroupsSequence
        shared = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        pixels = ds.pixel_array.astype(np.float32) * float(shared.RescaleSlope) + float(shared.RescaleIntercept)
        keys = [(tuple(f.FrameContentSequence[0].DimensionIndexValues)[1:]) for f in frames]
    else:
        files = sorted(p for p in path.iterdir() if p.is_file())
        datasets = [pydicom.dcmread(p) for p in files]
        iop = np.asarray(datasets[0].ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        keys = [(round(float(np.asarray(d.ImagePositionPatient, float) @ normal), 2), float(d.get("TriggerTime", 0)))
                for d in datasets]  # fmt: skip
        pixels = np.stack([d.pixel_array.astype(np.float32) * float(d.get("RescaleSlope", 1)) for d in datasets])
    slices = sorted({k[0] for k in keys})
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    n_frames = len(keys) // len(slices)
    return pixels[order].reshape(len(slices), n_frames, *pixels.shape[1:])


def _crop(image: np.ndarray, keep: float = 0.6) -> np.ndarray:
    """The central part of the field of view, where the heart is."""
    rows, cols = image.shape
    r0, c0 = int(rows * (1 - keep) / 2), int(cols * (1 - keep) / 2)
    return image[r0 : rows - r0, c0 : cols - c0]


def write_preview(cohort: str | Path, png: str | Path | None = None, per_site: int = 3, max_rows: int = 8) -> Path:
    """Montage of up to `per_site` subjects per site (different subtypes first); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cohort = Path(cohort)
    manifests = sorted(cohort.glob("*/manifest.csv"))
    if not manifests:
        raise DataError(f"{cohort}: no <site>/manifest.csv found; run `cccmr phantom --out {cohort}` first")
    picks: list[tuple[Path, dict]] = []
    for manifest in manifests:
        with manifest.open() as handle:
            rows = list(csv.DictReader(handle))
        seen: set[str] = set()
        chosen = []
        for row in rows:
            if row["subtype"] not in seen and row["lge_sax"]:
                seen.add(row["subtype"])
                chosen.append(row)
        picks += [(manifest.parent, row) for row in chosen[:per_site]]
    picks = picks[:max_rows]
    columns = ("cine SAX ED", "cine SAX ES", "4CH ED", "4CH ES", "LGE SAX")
    fig, axes = plt.subplots(len(picks), 5, figsize=(12.5, 2.75 * len(picks)), squeeze=False)
    fig.patch.set_facecolor("black")
    for i, (site_dir, row) in enumerate(picks):
        truth = json.loads((site_dir / "ground_truth" / f"{row['subject_id']}.json").read_text())
        sax = read_series(site_dir / row["cine_sax"])
        four = read_series(site_dir / row["cine_4ch"])
        lge = read_series(site_dir / row["lge_sax"])
        es = int(truth["es_frame"])
        mid = sax.shape[0] // 2
        images = [_crop(x) for x in (sax[mid, 0], sax[mid, es], four[0, 0], four[0, es], lge[lge.shape[0] // 2, 0])]
        for j, image in enumerate(images):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray", vmin=0, vmax=float(np.percentile(image, 99.7)))
            ax.set_axis_off()
            label = f"{row['subject_id']} {row['subtype'] or 'healthy'} EF {truth['ef']:.2f}" if j == 0 else ""
            ax.set_title(f"{columns[j]}\n{label}" if label else columns[j], color="white", fontsize=8)
    fig.tight_layout()
    png = Path(png) if png else cohort / "preview.png"
    fig.savefig(png, dpi=80, facecolor="black")
    plt.close(fig)
    return png
