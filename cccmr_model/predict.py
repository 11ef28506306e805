"""Cine-only prediction with a release: two DICOM series in, P(cardiomyopathy) and the call out.

The series go through the release's own preprocessing (`config.data`, the same `load_series` and
`preprocess_series` the sites used to build their caches), so a hospital reproduces exactly what the model was
trained on. LGE is never read. A screening release gives P(cardiomyopathy) and the call at
`config.evaluation.threshold`; a subtyping release (trained on cardiomyopathy patients only) gives the five ESC
subtype probabilities and the most probable subtype, and assumes the subject has a cardiomyopathy.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cccmr_model.config import ExperimentConfig
from cccmr_model.config.schema import DataConfig
from cccmr_model.data import load_series, preprocess_series
from cccmr_model.data.localise import CENTRE_FALLBACK, HeartCentre, choose_centre
from cccmr_model.data.manifest import SUBJECT_ID
from cccmr_model.data.preprocess import Preprocessed
from cccmr_model.data.series import Series
from cccmr_model.errors import CccmrError, DataError, not_utf8
from cccmr_model.metrics import SUBTYPE_NAMES, class_names
from cccmr_model.release import Release
from cccmr_model.runtime_options import PRECISIONS
from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES

log = logging.getLogger(__name__)
MANIFEST_COLUMNS = ("subject_id", CINE_4CH, CINE_SAX)


class CinePredictor(nn.Module):
    """The released model as a function of the two cine inputs: class probabilities (B, C).

    `forward(cine_4ch (B, 1, T, H, W), cine_sax (B, 3, T, H, W))`: the softmax of `model.predict`. This is
    what `cccmr predict` reports and what `cccmr export` writes to ONNX.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, cine_4ch: Tensor, cine_sax: Tensor) -> Tensor:
        return torch.softmax(self.model.predict(cine_4ch, cine_sax), dim=1)  # B, C


@dataclass(frozen=True)
class Prediction:
    """One subject's result; `probabilities` in class order (healthy, cardiomyopathy or the ESC subtypes)."""

    task: str
    probabilities: tuple[float, ...]
    threshold: float

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.task)

    @property
    def p_cardiomyopathy(self) -> float | None:
        """P(cardiomyopathy) of a screening release; None for a subtyping release."""
        return self.probabilities[1] if self.task == "screening" else None

    @property
    def call(self) -> str:
        if self.task == "screening":
            return "cardiomyopathy" if self.probabilities[1] >= self.threshold else "healthy"
        return self.class_names[int(np.argmax(self.probabilities))]

    def reported(self) -> tuple[float, ...]:
        """What a report shows: (P(cardiomyopathy),) for screening, the five subtype probabilities otherwise."""
        return (self.probabilities[1],) if self.task == "screening" else self.probabilities

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "call": self.call}
        if self.task == "screening":
            out.update(p_cardiomyopathy=self.p_cardiomyopathy, threshold=self.threshold)
        else:
            out["subtype_probabilities"] = dict(zip(self.class_names, self.probabilities, strict=True))
        return out


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`; a clear error when CUDA is asked for and absent."""
    if name != "cpu" and not name.startswith("cuda"):
        raise CccmrError(f"--device {name}: expected cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CccmrError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def parse_series_ref(text: str | Path, base: Path | None = None) -> tuple[Path, str | None]:
    """`PATH` or `PATH#SERIES_UID` (as in site manifests) -> (path, uid); relative paths are taken from `base`."""
    text = str(text).strip()
    path_text, uid = text, None
    if "#" in text and not Path(text).exists():
        path_text, _, uid_text = text.partition("#")
        uid = uid_text.strip() or None
    path = Path(path_text)
    if base is not None and not path.is_absolute():
        path = base / path
    return path, uid


def read_cine(
    path: Path,
    series_uid: str | None,
    sequence: str,
    config: ExperimentConfig,
    sax_point: tuple[float, float, float] | None = None,
    long_axis: tuple[float, float, float] | None = None,
) -> tuple[Preprocessed, HeartCentre]:
    """One cine series preprocessed as in training: (its `Preprocessed`, array (S, T, H, W); its crop centre).

    The crop centre is found as at ingestion: the SAX by its motion, the 4CH by the SAX point (`sax_point`) or its
    own motion. DataError with ingestion's reason.
    """
    if not path.exists():
        raise DataError(f"{path}: {sequence} series not found")
    prepared, centre = prepare_cine(load_series(path, series_uid), sequence, config.data, sax_point, long_axis)
    if centre.method == CENTRE_FALLBACK:
        log.warning("%s %s: heart not located (%s); centre crop used", path, sequence, centre.reason)
    return prepared, centre


def prepare_cine(
    series: Series,
    sequence: str,
    data: DataConfig,
    sax_point: tuple[float, float, float] | None = None,
    long_axis: tuple[float, float, float] | None = None,
) -> tuple[Preprocessed, HeartCentre]:
    """A loaded cine series localised and preprocessed as at ingestion: (its `Preprocessed`; its crop centre).

    A 4CH takes the SAX's heart point (`sax_point`) and, when that was found, its slice normal (`long_axis`), as
    ingestion does."""
    centre = choose_centre(series, sequence, data.crop, sax_point)
    axis = long_axis if sax_point is not None else None
    return preprocess_series(series, sequence, data, centre.point_mm, axis), centre


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether `precision` ("auto", "bf16" or "fp32") means bf16 autocast on `device`."""
    if precision not in PRECISIONS:
        raise CccmrError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def inference_autocast(device: torch.device, bf16: bool) -> AbstractContextManager:
    """bf16 autocast on `device` (matmuls and convolutions in bf16, softmax and norms in fp32), or nothing."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.no_grad()
def predict_arrays(
    predictor: CinePredictor, cine_4ch: np.ndarray, cine_sax: np.ndarray, device: torch.device, bf16: bool = False
) -> np.ndarray:
    """Probabilities (B, C) for preprocessed inputs (B, 1, T, H, W) and (B, 3, T, H, W); fp32 out either way."""
    x4 = torch.from_numpy(np.ascontiguousarray(cine_4ch)).to(device)  # B, 1, T, H, W
    xs = torch.from_numpy(np.ascontiguousarray(cine_sax)).to(device)  # B, 3, T, H, W
    with inference_autocast(device, bf16):
        probabilities = predictor(x4, xs)  # B, C
    return probabilities.float().cpu().numpy()


@dataclass(frozen=True)
class SubjectInputs:
    """One subject's two cine series as read: the model inputs and where they came from."""

    cine_4ch: Preprocessed
    cine_sax: Preprocessed
    sources: dict[str, tuple[Path, str | None]]  # sequence -> (path, series UID or None)

    def arrays(self) -> dict[str, np.ndarray]:
        return {CINE_4CH: self.cine_4ch.array, CINE_SAX: self.cine_sax.array}  # S, T, H, W each


class Predictor:
    """A loaded release ready to score subjects on one device; `precision` "auto" scores in bf16 autocast on CUDA
    (about half the activation memory, tensor cores) and in fp32 on the CPU."""

    def __init__(self, release: Release, device: str = "cpu", precision: str = "auto") -> None:
        self.release = release
        self.config = release.config
        self.device = resolve_device(device)
        self.bf16 = uses_bf16(self.device, precision)
        self.module = CinePredictor(release.model).to(self.device).eval()
        log.info("scoring on %s in %s", self.device, "bf16 autocast" if self.bf16 else "fp32")

    def read_subject(self, cine_4ch: str | Path, cine_sax: str | Path, *, base: Path | None = None) -> SubjectInputs:
        """Read and preprocess one subject's two cine series (the SAX first: its heart point centres the 4CH)."""
        sax_path, sax_uid = parse_series_ref(cine_sax, base)
        sax, centre = read_cine(sax_path, sax_uid, CINE_SAX, self.config)
        four_path, four_uid = parse_series_ref(cine_4ch, base)
        point = centre.point_mm if centre.ok else None  # without it the 4CH is not turned either (`prepare_cine`)
        four, _ = read_cine(four_path, four_uid, CINE_4CH, self.config, point, sax.slice_normal)
        return SubjectInputs(four, sax, {CINE_4CH: (four_path, four_uid), CINE_SAX: (sax_path, sax_uid)})

    def predict_inputs(self, inputs: SubjectInputs) -> Prediction:
        """Score a subject already read."""
        four, sax = inputs.cine_4ch.array[None], inputs.cine_sax.array[None]  # 1, S, T, H, W
        probabilities = predict_arrays(self.module, four, sax, self.device, self.bf16)[0]  # C
        four_path, sax_path = inputs.sources[CINE_4CH][0], inputs.sources[CINE_SAX][0]
        check_finite(probabilities, f"{four_path} and {sax_path}", self.release.path)
        return Prediction(self.config.task, tuple(float(p) for p in probabilities), self.config.evaluation.threshold)

    def predict_files(self, cine_4ch: str | Path, cine_sax: str | Path, *, base: Path | None = None) -> Prediction:
        """Read, preprocess and score one subject's two cine series."""
        return self.predict_inputs(self.read_subject(cine_4ch, cine_sax, base=base))


def check_finite(probabilities: np.ndarray, inputs: str, release: Path) -> None:
    """Refuse a non-finite probability: no call is made from NaN or Inf (DataError naming inputs and release)."""
    if not np.isfinite(probabilities).all():
        raise DataError(
            f"{inputs}: release {release} gave a non-finite probability {probabilities.tolist()}; no call made "
            "(non-finite weights in the release or non-finite inputs)"
        )


@dataclass(frozen=True)
class BatchRow:
    subject_id: str
    prediction: Prediction | None
    reason: str = ""  # why the subject could not be scored


def read_predict_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV with columns subject_id, cine_4ch, cine_sax (other columns are ignored, LGE never read)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(line for line in handle if not line.lstrip().startswith("#"))
            missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: manifest lacks column(s) {', '.join(missing)}; needs {MANIFEST_COLUMNS}")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: manifest is not {not_utf8(exc)}; save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read manifest ({exc.strerror})") from None
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        subject = (row.get("subject_id") or "").strip()
        if not SUBJECT_ID.match(subject):
            raise DataError(
                f"{path}: subject row {number}: subject_id {subject!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if subject in seen:
            raise DataError(f"{path}: subject row {number}: subject_id {subject} appears twice")
        seen.add(subject)
        for column in CINE_SEQUENCES:
            if not (row.get(column) or "").strip():
                raise DataError(f"{path}: subject row {number}: {column} is empty")
    if not rows:
        raise DataError(f"{path}: manifest has no subjects")
    return rows


SubjectHook = Callable[[str, SubjectInputs, Prediction], None]


def predict_manifest(predictor: Predictor, manifest: Path, after: SubjectHook | None = None) -> list[BatchRow]:
    """Score every subject of a manifest; an unusable series marks its subject rejected with ingestion's reason.

    `after(subject_id, inputs, prediction)` runs for each scored subject (the explanation, the DICOM result).
    """
    from cccmr_model.console import progress

    rows = read_predict_manifest(manifest)
    results = []
    for row in progress(rows, "predicting"):
        subject = row["subject_id"].strip()
        try:
            inputs = predictor.read_subject(row[CINE_4CH], row[CINE_SAX], base=manifest.parent)
            prediction = predictor.predict_inputs(inputs)  # DataError for a non-finite probability
        except DataError as exc:
            log.warning("%s: rejected: %s", subject, exc)
            results.append(BatchRow(subject, None, str(exc)))
            continue
        if after is not None:
            after(subject, inputs, prediction)
        results.append(BatchRow(subject, prediction))
    return results


def write_predictions(path: Path, rows: Sequence[BatchRow], config: ExperimentConfig) -> None:
    """CSV: subject_id, status, the probabilities, the call, and the reason of a rejected subject."""
    if config.task == "screening":
        value_columns = ["p_cardiomyopathy", "call"]
    else:
        value_columns = [f"p_{name}" for name in SUBTYPE_NAMES] + ["call"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "status", *value_columns, "reason"])
        for row in rows:
            values = [""] * len(value_columns)
            if row.prediction is not None:
                values = [f"{p:.6f}" for p in row.prediction.reported()] + [row.prediction.call]
            status = "ok" if row.prediction is not None else "rejected"
            writer.writerow([row.subject_id, status, *values, row.reason])
