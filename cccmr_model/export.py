"""Export a release's cine-only predictor to ONNX and check it against PyTorch with onnxruntime.

The graph takes `cine_4ch` (B, 1, T, H, W) and `cine_sax` (B, 3, T, H, W), already preprocessed as `cccmr predict`
does (T, H, W fixed by the release's `config.data`), and returns `probabilities` (B, C): the softmax of the fused
logits, classes (healthy, cardiomyopathy) or the five ESC subtypes. The batch size is dynamic.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`. The torch.export-based exporter (the
default since torch 2.9, and it needs onnxscript) fails on the Swin window attention in torch 2.14: its
decomposition of `scaled_dot_product_attention` yields a non-contiguous tensor that a later `view` rejects. The
tracer fixes every branch that depends on T, H and W (padding, window shrinking), which the release fixes too; the
one branch that depends on the batch (expanding the shift mask over B * windows) is traced with a batch of 2 so it
is taken, and is correct for any batch, as `check_onnx` verifies at batch 1 and 3.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from cccmr_model.errors import CccmrError
from cccmr_model.metrics import class_names
from cccmr_model.predict import CinePredictor
from cccmr_model.release import Release
from cccmr_model.runtime_options import DEFAULT_OPSET, check_opset

log = logging.getLogger(__name__)
INPUT_NAMES = ("cine_4ch", "cine_sax")
OUTPUT_NAME = "probabilities"
TOLERANCE = 1e-4  # max abs difference of probabilities, onnxruntime vs PyTorch


@dataclass(frozen=True)
class ExportReport:
    path: Path
    max_abs_diff: float  # over the checked batches; nan when not checked
    checked_batches: tuple[int, ...]


def example_inputs(release: Release, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random preprocessed-like inputs (z-scored values) of the release's shapes."""
    data = release.config.data
    generator = torch.Generator().manual_seed(seed)
    shape = (data.frames, data.image_size, data.image_size)
    cine_4ch = torch.randn(batch, data.slices["cine_4ch"], *shape, generator=generator)  # B, 1, T, H, W
    cine_sax = torch.randn(batch, data.slices["cine_sax"], *shape, generator=generator)  # B, 3, T, H, W
    return cine_4ch, cine_sax


def export_onnx(release: Release, out: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write the cine-only predictor of `release` to the ONNX file `out` (dynamic batch, release metadata)."""
    check_opset(opset)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    predictor = CinePredictor(release.model).cpu().eval()
    with warnings.catch_warnings():  # the legacy-exporter notice and tracer notes on shape-fixed branches
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            predictor,
            example_inputs(release, batch=2),
            str(out),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: {0: "batch"} for name in (*INPUT_NAMES, OUTPUT_NAME)},
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    _add_metadata(out, release)
    return out


def _add_metadata(path: Path, release: Release) -> None:
    """Record which release the graph comes from and how to read its output."""
    onnx = _require("onnx")
    model = onnx.load(str(path))
    config = release.config
    classes = class_names(config.task)
    data = config.data
    metadata = {
        "cccmr_release_content_hash": release.content_hash,
        "cccmr_release_name": config.name,
        "task": config.task,
        "classes": json.dumps(list(classes)),
        "threshold": str(config.evaluation.threshold),
        "input_shape_cine_4ch": json.dumps(
            ["batch", data.slices["cine_4ch"], data.frames, data.image_size, data.image_size]
        ),
        "input_shape_cine_sax": json.dumps(
            ["batch", data.slices["cine_sax"], data.frames, data.image_size, data.image_size]
        ),
        "preprocessing": "cccmr_model.data.preprocess_series with the release's config.yaml data section",
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "cccmr"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_onnx(path: str | Path, release: Release, *, batches: tuple[int, ...] = (1, 3), seed: int = 1) -> float:
    """Max abs difference of the ONNX graph (onnxruntime, CPU) and PyTorch over random inputs of each batch size."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    predictor = CinePredictor(release.model).cpu().eval()
    worst = 0.0
    for batch in batches:
        cine_4ch, cine_sax = example_inputs(release, batch, seed=seed + batch)
        with torch.no_grad():
            expected = predictor(cine_4ch, cine_sax).numpy()  # B, C
        (got,) = session.run([OUTPUT_NAME], {"cine_4ch": cine_4ch.numpy(), "cine_sax": cine_sax.numpy()})
        if got.shape != expected.shape:
            raise CccmrError(f"{path}: ONNX output shape {got.shape} differs from PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_and_check(
    release: Release, out: str | Path, *, opset: int = DEFAULT_OPSET, check: bool = True
) -> ExportReport:
    """Export, then verify against PyTorch; a difference above `TOLERANCE` removes the file and raises."""
    path = export_onnx(release, out, opset=opset)
    if not check:
        return ExportReport(path, float("nan"), ())
    batches = (1, 3)
    diff = check_onnx(path, release, batches=batches)
    if not diff <= TOLERANCE:
        path.unlink(missing_ok=True)
        raise CccmrError(f"{path}: ONNX and PyTorch disagree by {diff:.2e} (> {TOLERANCE:g}); file removed")
    return ExportReport(path, diff, batches)


def _require(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CccmrError(f"cccmr export needs the {module} package (pip install -e '.[dev]')") from None
