"""A synthetic multi-centre CMR cohort written as real DICOM exports: the demo's data, the tests' data, a benchmark.

`generate_cohort(out, sites, subjects, seed)` writes, per site, `<out>/<site>/manifest.csv`
(`subject_id,label,subtype,cine_4ch,cine_sax,lge_sax`, paths relative to the site folder), one folder per subject
with a SAX cine stack, a 4-chamber cine and a SAX LGE stack, and `<out>/<site>/ground_truth/<subject>.json`
(EDV, ESV, EF, wall thickness, LGE burden, subtype, severity, scanner). With `test_subjects`, a held-out set pooled
from all sites goes to `<out>/test/`. Deterministic for a seed: each subject draws from its own generator.

Anatomy and motion: `anatomy`; phenotypes: `subjects`; vendors and sites: `sites`; rendering and MR physics:
`render`; the DICOM files: `dicom_writer` (all in `cccmr_model.phantom`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cccmr_model.data.manifest import COLUMNS, MANIFEST_NAME, write_manifest
from cccmr_model.errors import DataError
from cccmr_model.phantom.anatomy import Heart, ground_truth
from cccmr_model.phantom.dicom_writer import Encoding, Geometry, Sampling, SeriesTags, make_uid, write_series
from cccmr_model.phantom.render import Layout, Plane, add_rician, bias_field, blur, render_planes
from cccmr_model.phantom.sites import VENDORS, Site, Vendor, choose, pooled_site, site_profile
from cccmr_model.phantom.subjects import sample_heart

log = logging.getLogger(__name__)

LGE_PHASE = 0.72  # mid-diastole


@dataclass(frozen=True)
class CohortSize:
    """Acquisition ranges; `full` is realistic, the smaller presets trade resolution for speed (tests, demo)."""

    matrix: tuple[int, ...]
    frames: tuple[int, ...]
    sax_slices: tuple[int, int]
    lge_slices: tuple[int, int]
    fov_mm: tuple[float, float] = (300.0, 380.0)
    thickness_samples: int = 2  # sub-slices averaged for through-plane partial volume


SIZES: dict[str, CohortSize] = {
    "full": CohortSize(matrix=(192, 208, 224, 240, 256), frames=(20, 25, 30), sax_slices=(8, 12), lge_slices=(10, 14)),
    "small": CohortSize(matrix=(112, 128), frames=(16, 20), sax_slices=(8, 10), lge_slices=(10, 12)),
    "tiny": CohortSize(matrix=(64, 72), frames=(8, 10), sax_slices=(8, 10), lge_slices=(6, 8), thickness_samples=1),
}


@dataclass(frozen=True)
class SubjectSpec:
    site: Site
    subject_id: str
    label: int
    subtype: str | None
    seed: tuple[int, ...]
    size: CohortSize


@dataclass(frozen=True)
class Protocol:
    """One subject's scanner and acquisition settings."""

    vendor: Vendor
    model: str
    field_strength: float
    matrix: int
    spacing: float
    frames: int
    sax_slices: int
    sax_thickness: float
    sax_gap: float
    lge_slices: int
    lge_thickness: float
    inversion_time: float
    slope: float
    peak: float
    snr: float
    has_lge: bool


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def sample_layout(rng: np.random.Generator, heart: Heart) -> Layout:
    """Body and heart placement in LPS: the LV long axis points left, anterior and inferior."""
    body = np.array([rng.normal(0, 8), rng.normal(0, 8), rng.uniform(-60, 60)])
    n = _unit(np.array([0.55, -0.45, -0.68]) + rng.normal(0, 0.08, 3))
    right_anterior = np.array([-1.0, -0.55, 0.1])
    e1 = _unit(right_anterior - (right_anterior @ n) * n)
    e2 = np.cross(n, e1)
    if e2 @ np.array([0.0, -0.3, 1.0]) < 0:  # y points superior-anterior, so the inferior wall is at y < 0
        e2 = -e2
    angle = rng.normal(0, 0.12)
    e1, e2 = np.cos(angle) * e1 + np.sin(angle) * e2, -np.sin(angle) * e1 + np.cos(angle) * e2
    origin = body + np.array([12.0, -22.0, 15.0]) + rng.normal(0, 5, 3) - 0.25 * heart.lv_length * n
    return Layout(body_center=body, body_scale=float(rng.uniform(0.9, 1.1)), heart_origin=origin,
                  axes=np.stack([e1, e2, n]))  # fmt: skip


def sample_protocol(rng: np.random.Generator, site: Site, size: CohortSize, heart: Heart) -> Protocol:
    vendor = VENDORS[choose(rng, site.vendor_mix)]
    model, field = vendor.models[int(rng.integers(len(vendor.models)))]
    matrix = int(rng.choice(size.matrix))
    spacing = float(np.clip(rng.uniform(*size.fov_mm) / matrix, 1.2, 1.9 if matrix >= 192 else 6.0))
    thickness = float(rng.choice(site.slice_thickness))
    gap = float(rng.choice([0.0, 0.0, 1.0, 2.0]))
    coverage = heart.lv_length + heart.apex_wall + 10.0
    needed = round(coverage / (thickness + gap)) + 1
    sax = int(np.clip(needed, *size.sax_slices))
    if sax < needed:  # a stack covers base to apex: fewer slices take wider gaps rather than stopping half way,
        gap = round(coverage / (sax - 1) - thickness, 1)  # where their middle slices would be basal, not mid-LV
    lge = int(rng.integers(size.lge_slices[0], size.lge_slices[1] + 1))
    slope = round(float(rng.uniform(*vendor.slope_range)), 5) if vendor.rescale else 1.0
    return Protocol(
        vendor=vendor, model=model, field_strength=field, matrix=matrix, spacing=round(spacing, 4),
        frames=int(rng.choice(size.frames)), sax_slices=sax, sax_thickness=thickness, sax_gap=gap,
        lge_slices=lge, lge_thickness=float(rng.choice([6.0, 8.0])), inversion_time=float(rng.uniform(250, 340)),
        slope=slope, peak=float(rng.uniform(*vendor.stored_peak)), snr=site.snr * (1.25 if field > 2 else 1.0),
        has_lge=bool(rng.random() >= site.lge_missing),
    )  # fmt: skip


def sax_planes(layout: Layout, heart: Heart, protocol: Protocol, rng: np.random.Generator, count: int,
               spacing_mm: float) -> list[Plane]:  # fmt: skip
    """A short-axis stack covering base to apex, slightly tilted from the true long axis, RV on the image left."""
    e1, e2, n = layout.axes
    tilt = _unit(n + rng.normal(0, 0.05, 3))
    row = _unit(-e1 - (-e1 @ tilt) * tilt)
    col = np.cross(tilt, row)
    if col @ e2 > 0:  # the inferior wall at the bottom of the image
        col = -col
    start = -0.5 * spacing_mm + rng.uniform(-3, 3)
    center0 = layout.heart_origin + 0.25 * heart.rv_width * e1 + rng.normal(0, 8, 3) * np.array([1, 1, 1])
    center0 = center0 - (center0 - layout.heart_origin) @ tilt * tilt
    normal = np.cross(row, col)
    planes = []
    for k in range(count):
        center = center0 + (start + k * spacing_mm) * tilt
        planes.append(Plane.centred(center, row, col, protocol.matrix, protocol.spacing))
    if normal @ tilt < 0:  # keep ImagePositionPatient ascending along the IOP normal in file order
        planes = planes[::-1]
    return planes


def four_chamber_plane(layout: Layout, heart: Heart, protocol: Protocol) -> Plane:
    """The horizontal long-axis plane through the LV axis and the RV: apex up, atria down, RV on the left."""
    e1, _, n = layout.axes
    center = layout.heart_origin + 0.3 * heart.rv_width * e1 + (0.35 * heart.lv_length - 12.0) * n
    return Plane.centred(center, -e1, -n, protocol.matrix, protocol.spacing)


def _finish(clean: np.ndarray, planes: list[Plane], protocol: Protocol, rng: np.random.Generator, snr: float):
    bias = bias_field(planes, rng, strength=1.0)
    noisy = add_rician(blur(clean) * bias[:, None], 1.0 / snr, rng)
    return noisy * protocol.peak * protocol.slope  # real-world values; the writer stores them / slope


def render_subject(heart: Heart, layout: Layout, protocol: Protocol, rng: np.random.Generator, size: CohortSize,
                   noise: bool = True) -> dict[str, dict]:  # fmt: skip
    """All series of one subject: {sequence: {array, planes, thickness, trigger_times}}."""
    rr = 60000.0 / heart.heart_rate
    phases = np.arange(protocol.frames) / protocol.frames
    spacing = protocol.sax_thickness + protocol.sax_gap
    series: dict[str, dict] = {}
    planes = sax_planes(layout, heart, protocol, rng, protocol.sax_slices, spacing)
    cine = render_planes(heart, layout, planes, phases, "cine", thickness=protocol.sax_thickness,
                         samples=size.thickness_samples)  # fmt: skip
    rr_slices = rr * (1.0 + rng.normal(0, 0.02, len(planes)))
    trigger = np.outer(rr_slices, phases)
    series["cine_sax"] = {"array": cine, "planes": planes, "thickness": protocol.sax_thickness, "trigger": trigger}
    shift = rng.normal(0, 2.5, 3)  # a different breath-hold position
    four = [four_chamber_plane(layout, heart, protocol)]
    cine4 = render_planes(heart, layout, four, phases, "cine", heart_shift=shift, thickness=protocol.sax_thickness,
                          samples=size.thickness_samples)  # fmt: skip
    series["cine_4ch"] = {"array": cine4, "planes": four, "thickness": protocol.sax_thickness,
                          "trigger": np.outer([rr], phases)}  # fmt: skip
    if protocol.has_lge:
        lge_spacing = max(protocol.lge_thickness, (heart.lv_length + 20.0) / (protocol.lge_slices - 1))
        lge_planes = sax_planes(layout, heart, protocol, rng, protocol.lge_slices, min(lge_spacing, 10.0))
        lge = render_planes(heart, layout, lge_planes, np.array([LGE_PHASE]), "lge", heart_shift=rng.normal(0, 2.5, 3),
                            thickness=protocol.lge_thickness, samples=size.thickness_samples)  # fmt: skip
        series["lge_sax"] = {"array": lge, "planes": lge_planes, "thickness": protocol.lge_thickness,
                             "trigger": np.full((len(lge_planes), 1), round(LGE_PHASE * rr))}  # fmt: skip
    if noise:
        for name, item in series.items():
            snr = protocol.snr * (0.7 if name == "lge_sax" else 1.0)
            item["array"] = _finish(item["array"], item["planes"], protocol, rng, snr)
    return series


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def write_subject(spec: SubjectSpec, site_dir: Path) -> dict:
    """Render and write one subject; returns its manifest row and ground truth."""
    rng = np.random.default_rng(list(spec.seed))
    heart, severity = sample_heart(rng, spec.subtype)
    layout = sample_layout(rng, heart)
    protocol = sample_protocol(rng, spec.site, spec.size, heart)
    series = render_subject(heart, layout, protocol, rng, spec.size)
    uid_seed = "-".join(map(str, spec.seed))
    study_uid = make_uid("study", uid_seed)
    patient_id = f"SYN{zlib.crc32(uid_seed.encode()):08X}"
    vendor = protocol.vendor
    numbers = {"cine_4ch": 3, "cine_sax": 5, "lge_sax": 14} if vendor.name != "philips" else {
        "cine_4ch": 301, "cine_sax": 501, "lge_sax": 1401}  # fmt: skip
    row = dict.fromkeys(COLUMNS, "") | {"subject_id": spec.subject_id, "label": str(spec.label),
                                        "subtype": spec.subtype or ""}  # fmt: skip
    age = int(rng.integers(18, 80))
    for name, item in series.items():
        description = vendor.descriptions[name]
        folder = f"{spec.subject_id}/{numbers[name]:04d}_{_slug(description)}"
        planes: list[Plane] = item["planes"]
        geometry = Geometry(tuple(planes[0].row), tuple(planes[0].col), np.stack([p.origin for p in planes]))
        tags = SeriesTags(
            patient_name=f"SYNTHETIC^{spec.subject_id.upper()}", patient_id=patient_id, study_uid=study_uid,
            series_uid=make_uid("series", uid_seed, name), frame_of_reference_uid=make_uid("for", uid_seed),
            series_number=numbers[name], series_description=description, manufacturer=vendor.manufacturer,
            model_name=protocol.model, institution=f"{spec.site.name.title()} Hospital (synthetic)",
            field_strength=protocol.field_strength, patient_sex=str(rng.choice(["F", "M"])),
            patient_age=f"{age:03d}Y", heart_rate=heart.heart_rate,
            repetition_time=3.0 if name != "lge_sax" else 6.0, echo_time=1.4 if name != "lge_sax" else 2.9,
            flip_angle=55.0 if name != "lge_sax" else 25.0,
            scanning_sequence="GR" if name != "lge_sax" else "IR\\GR",
            inversion_time=round(protocol.inversion_time, 1) if name == "lge_sax" else None,
        )  # fmt: skip
        path = site_dir / (folder + ".dcm" if vendor.enhanced else folder)
        sampling = Sampling(geometry, (protocol.spacing, protocol.spacing), item["thickness"], item["trigger"])
        encoding = Encoding(
            enhanced=vendor.enhanced, rescale_slope=protocol.slope if vendor.rescale else None,
            rescale_intercept=0.0 if vendor.rescale else None, filename=vendor.filename,
        )  # fmt: skip
        write_series(path, item["array"], sampling, tags, encoding)
        row[name] = path.relative_to(site_dir).as_posix()
    truth = ground_truth(heart, protocol.frames, LGE_PHASE)
    truth.update(
        subject_id=spec.subject_id, label=spec.label, subtype=spec.subtype or "", severity=round(severity, 3),
        lge_positive=bool(heart.scars), has_lge=protocol.has_lge, heart_rate=round(heart.heart_rate, 1),
        manufacturer=vendor.manufacturer, model=protocol.model, field_strength=protocol.field_strength,
        matrix=protocol.matrix, pixel_spacing_mm=protocol.spacing, frames=protocol.frames,
        sax_slices=protocol.sax_slices, sax_thickness_mm=protocol.sax_thickness, lge_slices=protocol.lge_slices,
        enhanced=vendor.enhanced,
        # Where the LV is (patient LPS, mm; synthetic truth for the localisation tests): its long axis runs from
        # the mitral valve plane centre at end-diastole along lv_axis to the endocardial apex (heart z, x = y = 0).
        heart_origin_mm=[round(float(v), 3) for v in layout.heart_origin],
        lv_axis=[round(float(v), 6) for v in layout.axes[2]],
        lv_centre_mm=[round(float(v), 3) for v in layout.heart_origin + 0.5 * heart.lv_length * layout.axes[2]],
    )  # fmt: skip
    gt_dir = site_dir / "ground_truth"
    gt_dir.mkdir(parents=True, exist_ok=True)
    (gt_dir / f"{spec.subject_id}.json").write_text(json.dumps(truth, indent=1) + "\n")
    return {"row": row, "truth": truth}


def subject_specs(site: Site, count: int, seed: int, size: CohortSize, prefix: str | None = None) -> list[SubjectSpec]:
    """Labels (exactly round(prevalence * count) patients) and subtypes of a site, drawn deterministically."""
    key = zlib.crc32(site.name.encode("utf-8"))
    rng = np.random.default_rng([seed, key])
    positives = round(site.prevalence * count)
    if count >= 2:
        positives = min(max(positives, 1), count - 1)
    labels = np.zeros(count, int)
    labels[:positives] = 1
    rng.shuffle(labels)
    specs = []
    for index, label in enumerate(labels):
        subtype = choose(rng, site.subtype_mix) if label else None
        subject_id = f"{prefix or site.name}-{index + 1:04d}"
        specs.append(SubjectSpec(site, subject_id, int(label), subtype, (seed, key, index), size))
    return specs


def _run(job: tuple[SubjectSpec, Path]) -> dict:
    spec, site_dir = job
    return write_subject(spec, site_dir)


def generate_cohort(
    out: str | Path,
    sites: Sequence[str],
    subjects: int,
    seed: int = 0,
    *,
    test_subjects: int = 0,
    size: str = "full",
    workers: int = 1,
    progress: callable | None = None,  # type: ignore[valid-type]
) -> dict[str, list[dict]]:
    """Write the cohort; returns {site or "test": [ground truth per subject]}."""
    if size not in SIZES:
        raise DataError(f"phantom: unknown size {size!r}; choose one of {', '.join(SIZES)}")
    if not sites or subjects < 1:
        raise DataError("phantom: need at least one site and one subject per site")
    out = Path(out)
    cohort_size = SIZES[size]
    profiles = [site_profile(name) for name in sites]
    groups: dict[str, list[SubjectSpec]] = {p.name: subject_specs(p, subjects, seed, cohort_size) for p in profiles}
    if test_subjects:
        if "test" in groups:
            raise DataError("phantom: a site may not be called 'test' (the held-out set's folder)")
        groups["test"] = subject_specs(pooled_site(profiles), test_subjects, seed, cohort_size, prefix="test")
    jobs = [(spec, out / group) for group, specs in groups.items() for spec in specs]
    results: dict[str, list[dict]] = {group: [] for group in groups}
    by_id = {spec.subject_id: group for group, specs in groups.items() for spec in specs}
    for result in _map(jobs, workers, progress):
        results[by_id[result["row"]["subject_id"]]].append(result)
    truths: dict[str, list[dict]] = {}
    for group, items in results.items():
        items.sort(key=lambda r: r["row"]["subject_id"])
        write_manifest(out / group / MANIFEST_NAME, [r["row"] for r in items])
        truths[group] = [r["truth"] for r in items]
    summary = {
        "seed": seed,
        "size": size,
        "sites": {p.name: _site_summary(p) for p in profiles},
        "subjects": subjects,
        "test_subjects": test_subjects,
        "cohort_size": asdict(cohort_size),
    }
    (out / "cohort.json").write_text(json.dumps(summary, indent=1) + "\n")
    return truths


def _site_summary(site: Site) -> dict:
    return {"prevalence": site.prevalence, "subtype_mix": site.subtype_mix, "vendor_mix": site.vendor_mix,
            "snr": site.snr, "slice_thickness": list(site.slice_thickness)}  # fmt: skip


def _map(jobs: list, workers: int, progress) -> Iterator[dict]:
    wrap = progress or (lambda items, description, total=None: items)
    if workers <= 1 or len(jobs) <= 1:
        yield from wrap((_run(job) for job in jobs), "phantom subjects", total=len(jobs))
        return
    workers = min(workers, len(jobs), os.cpu_count() or 1)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from wrap(pool.map(_run, jobs, chunksize=1), "phantom subjects", total=len(jobs))
