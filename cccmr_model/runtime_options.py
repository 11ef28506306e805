"""The choices that `cccmr predict` and `cccmr export` offer, kept free of torch so that the command line (and
`cccmr doctor`, which reports a broken torch install) builds its parser without importing it."""

from __future__ import annotations

from cccmr_model.errors import CccmrError

PRECISIONS = ("auto", "bf16", "fp32")  # cccmr predict; auto: bf16 autocast on CUDA, fp32 on the CPU
DEFAULT_OPSET = 17  # cccmr export
OPSETS = range(11, 21)  # the TorchScript exporter's opsets that export this model (index_put needs 11)


def check_opset(opset: int) -> None:
    """An opset the exporter can write this model in, else a one-line CccmrError."""
    if opset not in OPSETS:
        raise CccmrError(f"--opset {opset}: must be {OPSETS.start} to {OPSETS.stop - 1} (default {DEFAULT_OPSET})")
