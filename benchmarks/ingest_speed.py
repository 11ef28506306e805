"""DICOM-to-cache ingestion speed: series per second with 1 and 2 workers, and the warm re-run speed-up.

A synthetic site (classic single-frame files for the cines, one enhanced multi-frame file for each LGE, vendor-like
matrix sizes) is written to a temporary folder and ingested at the paper's settings (`configs/default.yaml`:
224 x 224, 16 frames). The warm re-run finds every input unchanged and only stats files (target: >= 20x faster).
Standalone: `python -m benchmarks.ingest_speed [--quick] [--subjects N]`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from cccmr_model.config import load_config
from cccmr_model.data import ingest_site
from cccmr_model.phantom.dicom_writer import Encoding, Geometry, Sampling, SeriesTags, write_series

ROW, COL = (0.6, 0.8, 0.0), (0.48, -0.36, -0.8)


def _write(out: Path, slices: int, frames: int, size: int, seed: int, enhanced: bool = False) -> None:
    rng = np.random.default_rng(seed)
    array = rng.gamma(2.0, 120.0, (slices, frames, size, size)).astype(np.float32)  # S, F, R, C
    geometry = Geometry.stack([-60.0, 20.0, 90.0], ROW, COL, slices, 8.0)
    trigger = np.tile(np.arange(frames) * 35.0, (slices, 1)) if frames > 1 else None
    tags = SeriesTags(inversion_time=300.0 if frames == 1 else None)
    write_series(
        out, array, Sampling(geometry, (1.4, 1.4), 8.0, trigger), tags=tags, encoding=Encoding(enhanced=enhanced)
    )


def make_site(root: Path, subjects: int, quick: bool) -> int:
    """Write a site with a manifest; returns the number of series."""
    size, frames, sax = (128, 20, 8) if quick else (192, 25, 10)
    lines = ["subject_id,label,subtype,cine_4ch,cine_sax,lge_sax"]
    for index in range(subjects):
        name = f"b{index:03d}"
        _write(root / name / "cine4ch", 1, frames, size, 3 * index)
        _write(root / name / "cinesax", sax, frames, size, 3 * index + 1)
        _write(root / name / "lge.dcm", sax, 1, size + 64, 3 * index + 2, enhanced=True)
        lines.append(f"{name},{index % 2},,{name}/cine4ch,{name}/cinesax,{name}/lge.dcm")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return 3 * subjects


def run(quick: bool, subjects: int | None = None) -> list[dict]:
    subjects = subjects or (4 if quick else 8)
    config = load_config("default").data
    work = Path(tempfile.mkdtemp(prefix="cccmr-ingest-bench-"))
    try:
        site = work / "site"
        n_series = make_site(site, subjects, quick)
        rows, cold = [], {}
        for workers in (1, 2):
            start = time.perf_counter()
            report = ingest_site(site, work / f"cache{workers}", config, workers=workers)
            cold[workers] = time.perf_counter() - start
            assert report.computed == n_series and not report.rejections, report.summary()
            rows.append(_row(f"cold, {workers} worker(s)", n_series / cold[workers], "series/s", cold[workers]))
        start = time.perf_counter()
        report = ingest_site(site, work / "cache1", config, workers=1)
        warm = time.perf_counter() - start
        assert report.computed == 0 and report.reused == n_series
        rows.append(_row("warm re-run", n_series / warm, "series/s", warm))
        rows.append(_row("warm speed-up vs cold 1 worker", cold[1] / warm, "x", warm, note="target >= 20x"))
        for row in rows:
            row.update(subjects=subjects, series=n_series)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _row(metric: str, value: float, unit: str, seconds: float, note: str = "") -> dict:
    return {"benchmark": "ingest_speed", "metric": metric, "value": value, "unit": unit, "wall_s": round(seconds, 3),
            "note": note}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--subjects", type=int)
    args = parser.parse_args()
    rows = run(args.quick, args.subjects)
    print(f"{'metric':<34} {'value':>10} {'unit':<9} {'wall_s':>8}")
    for row in rows:
        print(f"{row['metric']:<34} {row['value']:>10.2f} {row['unit']:<9} {row['wall_s']:>8.3f}")
    print(f"({rows[0]['subjects']} subjects, {rows[0]['series']} series, configs/default.yaml)")


if __name__ == "__main__":
    main()
