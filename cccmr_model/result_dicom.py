"""`cccmr predict --dicom-out DIR`: the result as DICOM for PACS, built with highdicom, in the input's study.

Two objects, each in a new series of the input's study (StudyInstanceUID and the patient module copied from the
SAX cine, new Series and SOP Instance UIDs):

- `result_page.dcm`, a Secondary Capture: the call, the probability, the threshold, the release (name, version,
  content hash), the saliency (HiResCAM) overlays at end-diastole and end-systole, and "screening aid, not a
  diagnosis". The page carries no patient identifiers in its pixels (BurnedInAnnotation NO); its header carries
  the input's.
- `result_sr.dcm`, a Comprehensive 3D SR (TID 1500 measurement report) with each reported probability as a
  coded measurement, the release as the algorithm (name, version, content hash) and the cine series as evidence.

Patient identity stays as in the input: these objects stay in the hospital. Nothing identifying is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cccmr_model import __version__
from cccmr_model.data.dicom_reader import read_dataset
from cccmr_model.errors import DataError
from cccmr_model.sequences import CINE_4CH, CINE_SAX

MANUFACTURER = "CC-CMR Federated"
SCHEME = "99CCCMR"  # private coding scheme (DICOM PS3.16 8.2: local schemes start with "99")
DISCLAIMER = "Screening aid, not a diagnosis."
PAGE_FILE, SR_FILE = "result_page.dcm", "result_sr.dcm"
PAGE_SERIES, SR_SERIES = 9901, 9902


@dataclass(frozen=True)
class ReleaseId:
    """What identifies the model that made a result."""

    name: str
    version: str  # cccmr version that wrote the release
    content_hash: str
    task: str


def series_headers(path: Path, series_uid: str | None) -> list[Dataset]:
    """Headers (no pixels) of the instances of one input series: a multi-frame file or a folder's files."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    headers = []
    for file in files:
        try:
            ds = read_dataset(file, with_pixels=False)
        except DataError:
            continue
        if series_uid is None or ds.get("SeriesInstanceUID") == series_uid:
            headers.append(ds)
    if not headers:
        raise DataError(f"{path}: no DICOM instance of the series to reference")
    return headers


def page_pixels(lines: Sequence[str], pictures: Sequence[Path]) -> np.ndarray:
    """The result page as RGB (H, W, 3) uint8: text lines above the overlay pictures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    images = [np.asarray(Image.open(p).convert("RGB")) for p in pictures]
    rows = 1 + len(images)
    fig = plt.figure(figsize=(8, 1.6 + 2.6 * len(images)), dpi=100, facecolor="black")
    grid = fig.add_gridspec(rows, 1, height_ratios=[1.6] + [2.6] * len(images))
    text = fig.add_subplot(grid[0])
    text.set_axis_off()
    text.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", color="white", family="monospace", fontsize=8)
    for i, image in enumerate(images, start=1):
        ax = fig.add_subplot(grid[i])
        ax.imshow(image)
        ax.set_axis_off()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # H, W, 3
    plt.close(fig)
    return rgb


def page_lines(
    probabilities: dict[str, float],
    call: str,
    threshold: float | None,
    release: ReleaseId,
    frames: str | None = None,
) -> list[str]:
    """The result page's text; `frames` says how the pictured frames relate to the stored images."""
    lines = ["CC-CMR cine-only cardiomyopathy screening: result", f"Call: {call}"]
    lines += [f"P({name}): {p:.4f}" for name, p in probabilities.items()]
    if threshold is not None:
        lines.append(f"Threshold: {threshold:g}")
    lines += [
        f"Release: {release.name} ({release.task}), cccmr {release.version}",
        f"Release content hash: {release.content_hash}",
        *([f"Frames: {frames}"] if frames else []),
        "Overlays: HiResCAM saliency, where the network looked; not a segmentation of disease.",
        DISCLAIMER,
    ]
    return lines


def write_result_page(out: Path, reference: Dataset, pixels: np.ndarray) -> Path:
    """Secondary Capture of the page (H, W, 3) in the reference's study and patient; returns the file."""
    import highdicom as hd

    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "F"),  # required by highdicom for PATIENT; emptied below (a page, not a view)
        series_instance_uid=hd.UID(),
        series_number=PAGE_SERIES,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="CC-CMR result page (screening aid)",
    )
    image.PatientOrientation = ""  # Type 2: present, empty
    image.BurnedInAnnotation = "NO"
    # An unpaired organ: says that the General Series' Laterality (Type 2C, paired structures) does not apply.
    image.BodyPartExamined = reference.get("BodyPartExamined") or "HEART"
    image.SoftwareVersions = __version__
    path = out / PAGE_FILE
    image.save_as(path, enforce_file_format=True)
    return path


def _concept(value: str, meaning: str) -> object:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


def write_result_sr(
    out: Path, evidence: Sequence[Dataset], probabilities: dict[str, float], call: str, release: ReleaseId
) -> Path:
    """TID 1500 measurement report: one coded measurement per probability, the release as the algorithm."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.sr.AlgorithmIdentification(
        name=f"CC-CMR {release.name}", version=release.version, parameters=[f"content_hash={release.content_hash}"]
    )
    measurements = [
        hd.sr.Measurement(
            name=_concept(f"P-{name.upper()}", f"Probability of {name}"),
            value=round(float(p), 6),
            unit=codes.UCUM.NoUnits,
            algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Heart)],
        )
        for name, p in probabilities.items()
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"CC-CMR call: {call}"),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Heart)],
        measurements=measurements,
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(), name=f"CC-CMR {release.name}", manufacturer_name=MANUFACTURER, model_name=release.content_hash
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=_concept("CINE-CMR", "Cine cardiac MR screening"),
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description="CC-CMR result (screening aid)",
    )
    sr.SoftwareVersions = __version__
    path = out / SR_FILE
    sr.save_as(path, enforce_file_format=True)
    return path


def release_id(manifest: dict) -> ReleaseId:
    """The identity of a loaded release from its manifest (release.json)."""
    return ReleaseId(
        name=str(manifest.get("name", "")),
        version=str(manifest.get("cccmr_version", "")),
        content_hash=str(manifest["content_hash"]),
        task=str(manifest.get("task", "")),
    )


def write_dicom_result(
    out: Path,
    sources: dict[str, tuple[Path, str | None]],
    probabilities: dict[str, float],
    call: str,
    threshold: float | None,
    release: ReleaseId,
    pictures: Sequence[Path],
    frames: str | None = None,
) -> list[Path]:
    """The result page and the SR of one subject in `out`, in the study of its SAX cine; returns the files.

    `frames`: a line on how the pictured frames relate to the stored images (`page_lines`)."""
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name the input's UIDs
    sax = series_headers(*sources[CINE_SAX])
    four = series_headers(*sources[CINE_4CH])
    out.mkdir(parents=True, exist_ok=True)
    pixels = page_pixels(page_lines(probabilities, call, threshold, release, frames), pictures)
    page = write_result_page(out, sax[0], pixels)
    return [page, write_result_sr(out, [*sax, *four], probabilities, call, release)]
