"""Where the model looked: `cccmr predict --explain DIR`, saliency overlays per cine sequence and what weighs most."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from cccmr_model.predict import Prediction, SubjectInputs


def explain_subject(model: nn.Module, inputs: SubjectInputs, prediction: Prediction, out: Path) -> dict[str, Any]:
    """Explain the call of one scored subject into `out` (PNG, GIF, explanation.json); returns the summary."""
    from cccmr_model.explain.overlays import write_explanation
    from cccmr_model.explain.saliency import explain_arrays
    from cccmr_model.sequences import CINE_4CH, CINE_SAX

    target = prediction.class_names.index(prediction.call)
    arrays = inputs.arrays()
    saliency = explain_arrays(model, arrays[CINE_4CH], arrays[CINE_SAX], target, prediction.call)
    frame_times = {CINE_4CH: inputs.cine_4ch.frame_times, CINE_SAX: inputs.cine_sax.frame_times}
    slices = {CINE_4CH: inputs.cine_4ch.slice_indices, CINE_SAX: inputs.cine_sax.slice_indices}
    return write_explanation(out, arrays, saliency, frame_times, slices)
