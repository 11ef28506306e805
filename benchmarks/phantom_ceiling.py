"""Learnability ceiling on the phantom: per sequence, the held-out test AUC that the data allow.

`python benchmarks/phantom_ceiling.py --out DIR [--seeds 0 1 2] [--subjects 48] [--test-subjects 48]
[--config tiny] [--cohort EXISTING_DIR]`

For each seed: a phantom cohort (`cccmr phantom --size tiny`, two training sites and a held-out `test` export) is
written to `DIR/seed-S/data` and ingested with the config's data settings into `DIR/seed-S/cache/<site>`; then a
logistic regression (standardised features, L2 with C=1) is fit on the training sites and scored on the test set,
on two kinds of features per subject:

* ground truth (`SITE/ground_truth/<subject>.json`): what the phantom drew. Cine = EF, EDV, ESV, max and mean wall
  thickness; LGE = LGE burden (0 for subjects without an LGE series, as the network sees zeros); all = both;
* simple image features from the ingestion cache (what the network sees): for the cine SAX and 4CH stacks a
  bright blood-pool area curve per frame (fraction of pixels above z=1 inside a central disc) -> its max, min and
  (max-min)/max (an EF proxy), a dark (myocardium) fraction, the temporal standard deviation inside the disc and
  left/right half-disc areas; for LGE, intensity percentiles and bright-pixel fractions inside a central annulus.

The ground-truth rows bound what any model can get from those quantities; the image-feature rows are a floor that
a network should beat. `cine both` (4CH + SAX features) bounds the fused cine-only release, which has no LGE.
Per-subtype columns: AUC of each subtype's test patients against all healthy test subjects.

Writes `DIR/phantom-ceiling.md` and `DIR/phantom-ceiling.json` and prints the table. `ceiling(cohort_dir,
cache_root, config)` gives one cohort's rows for other benchmarks (e.g. next to phantom_ablation's heads).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from cccmr_model.config import load_config  # noqa: E402
from cccmr_model.data import ingest_site  # noqa: E402
from cccmr_model.data.cache import INDEX_NAME, read_json  # noqa: E402
from cccmr_model.metrics import SUBTYPE_NAMES, binary_auc, json_safe  # noqa: E402

log = logging.getLogger("cccmr.bench.ceiling")

TEST = "test"
CINE_TRUTH = ("ef", "edv_ml", "esv_ml", "max_wall_thickness_mm", "mean_wall_thickness_mm")
LGE_TRUTH = ("lge_burden",)
L2_C = 1.0  # inverse L2 strength on standardised features
BLOOD_Z = 1.0  # bright blood pool (cine SSFP, z-scored per series)
DARK_Z = -0.5  # myocardium and background
DISC = {"cine_sax": 0.3, "cine_4ch": 0.4}  # central disc radius, fraction of the image side
ANNULUS = (0.05, 0.35)  # LGE: inner and outer radius, fraction of the image side
LGE_BRIGHT_Z = (1.5, 2.5)

# Row name -> (feature source, feature group). Order is the table's.
ROWS: dict[str, tuple[str, str]] = {
    "truth: EF": ("truth", "ef"),
    "truth: cine (EF, volumes, wall)": ("truth", "cine"),
    "truth: LGE burden": ("truth", "lge"),
    "truth: all": ("truth", "all"),
    "image: 4CH cine": ("image", "cine_4ch"),
    "image: SAX cine": ("image", "cine_sax"),
    "image: cine both (4CH + SAX)": ("image", "cine"),
    "image: LGE": ("image", "lge_sax"),
    "image: all": ("image", "all"),
}


# --- features -------------------------------------------------------------------------------------------------


def _radius(size: int) -> np.ndarray:
    centre = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    return np.hypot(yy - centre, xx - centre) / size


def cine_features(array: np.ndarray, disc: float) -> dict[str, float]:
    """Blood-pool area curve and motion statistics of a cine stack (S, T, H, W), z-scored and heart-centred."""
    a = np.asarray(array, dtype=np.float32)
    size = a.shape[-1]
    r = _radius(size)
    inside = r < disc
    half = np.arange(size)[None, :] < size / 2
    left, right = inside & half, inside & ~half
    pixels = a[..., inside]  # S, T, N
    area = (pixels > BLOOD_Z).mean(-1).sum(0)  # T: summed over slices
    dark = (pixels < DARK_Z).mean(-1).mean(0)
    big, small = float(area.max()), float(area.min())
    per_slice = (pixels > BLOOD_Z).mean(-1)  # S, T
    slice_ef = (per_slice.max(1) - per_slice.min(1)) / np.maximum(per_slice.max(1), 1e-6)
    tstd = a.std(axis=1)  # S, H, W
    lr = [(a[..., m] > BLOOD_Z).mean(-1).sum(0) for m in (left, right)]
    return {
        "area_max": big,
        "area_min": small,
        "area_ef": (big - small) / max(big, 1e-6),
        "slice_ef_mean": float(slice_ef.mean()),
        "slice_ef_min": float(slice_ef.min()),
        "dark_max": float(dark.max()),
        "dark_mean": float(dark.mean()),
        "tstd_mean": float(tstd[:, inside].mean()),
        "tstd_p90": float(np.percentile(tstd[:, inside], 90)),
        "tstd_image": float(tstd.mean()),
        "left_max": float(lr[0].max()),
        "left_ef": float((lr[0].max() - lr[0].min()) / max(lr[0].max(), 1e-6)),
        "right_max": float(lr[1].max()),
        "right_ef": float((lr[1].max() - lr[1].min()) / max(lr[1].max(), 1e-6)),
    }


def lge_features(array: np.ndarray | None) -> dict[str, float]:
    """Intensity percentiles and bright fractions inside a central annulus of an LGE stack (S, H, W); zeros if none."""
    names = ["has_lge", "p50", "p90", "p99", "max", *[f"bright_{z}" for z in LGE_BRIGHT_Z], "bright_slices"]
    if array is None:
        return dict.fromkeys(names, 0.0)
    a = np.asarray(array, dtype=np.float32)
    r = _radius(a.shape[-1])
    ring = (r >= ANNULUS[0]) & (r < ANNULUS[1])
    pixels = a[:, ring]  # S, N
    p50, p90, p99 = np.percentile(pixels, [50, 90, 99])
    values = [1.0, float(p50), float(p90), float(p99), float(pixels.max())]
    values += [float((pixels > z).mean()) for z in LGE_BRIGHT_Z]
    values.append(float(((pixels > LGE_BRIGHT_Z[1]).mean(-1) > 0.02).mean()))
    return dict(zip(names, values, strict=True))


def truth_features(truth: Mapping[str, Any]) -> dict[str, float]:
    """Ground-truth quantities; LGE burden counts only where the subject has an LGE series (else 0, as imaged)."""
    features = {k: float(truth[k]) for k in CINE_TRUTH}
    features["lge_burden"] = float(truth["lge_burden"]) if truth.get("has_lge", True) else 0.0
    return features


# --- cohort -------------------------------------------------------------------------------------------------


def _resolve_config(config: Any) -> Any:
    return load_config(config) if isinstance(config, str) else config


def cohort_groups(cohort_dir: Path) -> list[str]:
    """Site folders (with a manifest) of a cohort, training sites first and `test` last."""
    groups = sorted(p.name for p in Path(cohort_dir).iterdir() if (p / "manifest.csv").is_file())
    if TEST not in groups:
        raise ValueError(f"{cohort_dir}: no held-out {TEST}/ export")
    return [g for g in groups if g != TEST] + [TEST]


def subject_table(cohort_dir: Path, cache_dir: Path) -> list[dict[str, Any]]:
    """One record per usable cached subject of a site: id, label, subtype, truth and image features."""
    index = read_json(cache_dir / INDEX_NAME)
    if not isinstance(index, dict):
        raise ValueError(f"{cache_dir}: no ingestion cache")
    records = []
    for sid, entry in sorted(index["subjects"].items()):
        truth_path = cohort_dir / "ground_truth" / f"{sid}.json"
        if not entry.get("usable") or not truth_path.is_file():
            continue
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
        seqs = entry["sequences"]
        image: dict[str, dict[str, float]] = {}
        for seq in ("cine_4ch", "cine_sax"):
            image[seq] = cine_features(np.load(cache_dir / seqs[seq]), DISC[seq])
        lge = seqs.get("lge_sax")
        image["lge_sax"] = lge_features(np.load(cache_dir / lge) if lge else None)
        records.append({
            "id": sid, "label": int(truth["label"]), "subtype": truth.get("subtype") or "",
            "truth": truth_features(truth), "image": image,
        })  # fmt: skip
    return records


def feature_matrix(records: Sequence[Mapping[str, Any]], source: str, group: str) -> tuple[np.ndarray, list[str]]:
    """(subjects x features, feature names) of one row."""
    if source == "truth":
        keys = {"ef": ["ef"], "cine": list(CINE_TRUTH), "lge": list(LGE_TRUTH), "all": [*CINE_TRUTH, *LGE_TRUTH]}
        names = keys[group]
        return np.array([[r["truth"][k] for k in names] for r in records], dtype=np.float64), names
    seqs = {"cine": ["cine_4ch", "cine_sax"], "all": ["cine_4ch", "cine_sax", "lge_sax"]}.get(group, [group])
    names = [f"{s}.{k}" for s in seqs for k in records[0]["image"][s]]
    rows = [[r["image"][s][k] for s in seqs for k in r["image"][s]] for r in records]
    return np.array(rows, dtype=np.float64), names


def fit_score(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Positive-class probabilities of a standardised, L2-regularised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=L2_C, max_iter=5000))
    model.fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1]


def subtype_aucs(scores: np.ndarray, labels: np.ndarray, subtypes: Sequence[str]) -> dict[str, float]:
    """AUC of each subtype's patients against all healthy subjects (NaN where a subtype is absent)."""
    kinds = np.asarray(subtypes)
    out = {}
    for name in SUBTYPE_NAMES:
        keep = (labels == 0) | (kinds == name)
        out[name] = binary_auc(scores[keep], labels[keep])
    return out


def ceiling(cohort_dir: str | Path, cache_root: str | Path, config: Any = "tiny", workers: int = 2) -> dict:
    """Learnability rows of one cohort: {"rows": {name: {"auc", "subtypes", "features"}}, "n_train", "n_test", ...}.

    `cohort_dir` as `cccmr phantom` writes it (sites + `test/`); `cache_root/<site>` is the ingestion cache of each
    (ingested here with `config.data` if missing or stale; a warm cache is only checked). `config`: a Config or a
    config name.
    """
    cohort_dir, cache_root = Path(cohort_dir), Path(cache_root)
    config = _resolve_config(config)
    groups = cohort_groups(cohort_dir)
    tables = {}
    for group in groups:
        ingest_site(cohort_dir / group, cache_root / group, config.data, workers=workers)
        tables[group] = subject_table(cohort_dir / group, cache_root / group)
    train = [r for g in groups[:-1] for r in tables[g]]
    test = tables[TEST]
    y_train = np.array([r["label"] for r in train])
    y_test = np.array([r["label"] for r in test])
    kinds = [r["subtype"] for r in test]
    rows = {}
    for name, (source, group) in ROWS.items():
        x_train, names = feature_matrix(train, source, group)
        x_test, _ = feature_matrix(test, source, group)
        scores = fit_score(x_train, y_train, x_test)
        rows[name] = {
            "auc": binary_auc(scores, y_test), "subtypes": subtype_aucs(scores, y_test, kinds), "features": names,
        }  # fmt: skip
    counts = {name: sum(1 for k in kinds if k == name) for name in SUBTYPE_NAMES}
    return {
        "rows": rows, "n_train": len(train), "n_test": len(test), "train_sites": groups[:-1],
        "test_patients": int(y_test.sum()), "test_subtypes": counts,
    }  # fmt: skip


# --- benchmark ----------------------------------------------------------------------------------------------


def make_cohort(out: Path, subjects: int, test_subjects: int, seed: int) -> Path:
    """`cccmr phantom --size tiny` into `out` (skipped when a cohort is already there)."""
    if (out / "cohort.json").is_file():
        return out
    command = [sys.executable, "-m", "cccmr_model", "phantom", "--out", str(out), "--size", "tiny", "--workers", "2"]
    command += ["--subjects", str(subjects), "--test-subjects", str(test_subjects), "--seed", str(seed)]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "sd": sd, "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def summarise(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, SD and range over seeds of each row's AUC and per-subtype AUCs."""
    summary = {}
    for name in ROWS:
        per = [run["rows"][name] for run in runs.values()]
        summary[name] = {
            "auc": _stats([p["auc"] for p in per]),
            "subtypes": {s: _stats([p["subtypes"][s] for p in per]) for s in SUBTYPE_NAMES},
        }
    return summary


def _fmt(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def markdown(summary: Mapping[str, Any], runs: Mapping[int, Mapping[str, Any]]) -> str:
    seeds = list(runs)
    head = ["Features", "AUC mean ± SD", "range", *[f"seed {s}" for s in seeds], *SUBTYPE_NAMES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in ROWS:
        auc = summary[name]["auc"]
        cells = [name, f"{_fmt(auc['mean'])} ± {_fmt(auc['sd'])}", f"{_fmt(auc['min'])}–{_fmt(auc['max'])}"]
        cells += [_fmt(runs[s]["rows"][name]["auc"]) for s in seeds]
        cells += [_fmt(summary[name]["subtypes"][t]["mean"]) for t in SUBTYPE_NAMES]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(runs.values()))
    counts = {t: sum(r["test_subtypes"][t] for r in runs.values()) for t in SUBTYPE_NAMES}
    notes = [
        "",
        f"Logistic regression (standardised, L2 C={L2_C}) fit on {', '.join(first['train_sites'])} "
        f"({first['n_train']} subjects), scored on the held-out test set ({first['n_test']} subjects); "
        f"seeds {', '.join(map(str, seeds))}. Subtype columns: {len(seeds)}-seed mean AUC of that subtype's test "
        f"patients vs all healthy test subjects (test patients over all seeds: "
        + ", ".join(f"{t} {counts[t]}" for t in SUBTYPE_NAMES) + ").",
    ]  # fmt: skip
    return "\n".join(lines + notes) + "\n"


def benchmark(
    out: str | Path,
    seeds: Sequence[int] = (0, 1, 2),
    subjects: int = 48,
    test_subjects: int = 48,
    config_name: str = "tiny",
    cohort: str | Path | None = None,
) -> dict[str, Any]:
    """Run every seed (or the one `cohort`), write the report files, return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(config_name)
    runs: dict[int, dict[str, Any]] = {}
    times = {}
    for seed in [None] if cohort else seeds:
        start = time.perf_counter()
        key = 0 if seed is None else int(seed)
        if cohort:
            data, cache_root = Path(cohort), out / "cache"
        else:
            data = make_cohort(out / f"seed-{seed}" / "data", subjects, test_subjects, key)
            cache_root = out / f"seed-{seed}" / "cache"
        runs[key] = ceiling(data, cache_root, config)
        times[key] = round(time.perf_counter() - start, 1)
        aucs = {k: round(v["auc"], 3) for k, v in runs[key]["rows"].items()}
        log.info("seed %s: %s in %.1f s", key, aucs, times[key])
    summary = summarise(runs)
    table = markdown(summary, runs)
    (out / "phantom-ceiling.md").write_text("# Learnability ceiling on the phantom\n\n" + table, encoding="utf-8")
    payload = {
        "summary": summary, "runs": {str(k): v for k, v in runs.items()}, "seconds": times,
        "settings": {"seeds": list(runs), "subjects": subjects, "test_subjects": test_subjects,
                     "config": config_name, "cohort": str(cohort) if cohort else None, "l2_c": L2_C},
    }  # fmt: skip
    (out / "phantom-ceiling.json").write_text(json.dumps(json_safe(payload), indent=2) + "\n", encoding="utf-8")
    return {"summary": summary, "runs": runs, "table": table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one phantom cohort per seed")
    parser.add_argument("--subjects", type=int, default=48, help="per training site")
    parser.add_argument("--test-subjects", type=int, default=48)
    parser.add_argument("--config", default="tiny", help="config name (configs/NAME.yaml): its data settings")
    parser.add_argument("--cohort", type=Path, help="an existing cohort (sites + test/) instead of generating")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    result = benchmark(args.out, args.seeds, args.subjects, args.test_subjects, args.config, args.cohort)
    print(result["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
