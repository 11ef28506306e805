"""Lighter parameter transfer: bf16 and block-wise int8 encodings of float32 vectors, and int8 error feedback.

`federation.wire` chooses how parameters cross the network (the server always keeps the fp32 master copy):

- `fp32`: as they are.
- `bf16`: the global model goes down in bfloat16 (round to nearest even); each site sends back its update, the
  trained weights minus the bf16 weights it received, in bf16. Half the bytes of fp32 each way.
- `int8`: down in bf16; the update goes up as int8 with one float32 scale per block of `INT8_BLOCK` values
  (symmetric, round to nearest; about a quarter of fp32's bytes). The rounding error is kept at the site and added
  to its next update of the same parameters (error feedback, Seide et al. 2014; Karimireddy et al. 2019), so no
  part of an update is lost for good, only delayed.

numpy has no bfloat16: a bf16 value is carried as the upper 16 bits of the float32 (a uint16 array). Everything
here is flwr-free and works on flat float32 vectors (the packed form of `cccmr_model/packing.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TAG = "__tag__"  # in the residual file: whose residuals they are (parameter names never start with "__")
INT8_BLOCK = 256  # values per int8 scale


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 [N] -> bf16 bits as uint16 [N], rounded to nearest even (NaN stays NaN)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32)
    work = bits >> np.uint32(16)  # one temporary, updated in place: a model is ~84 M values
    work &= np.uint32(1)
    work += np.uint32(0x7FFF)
    work += bits  # bits + 0x7FFF + lsb: rounds to nearest, ties to even
    work >>= np.uint32(16)
    rounded = work.astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = np.uint16(0x7FC0)
    return rounded


def from_bf16(bits: np.ndarray) -> np.ndarray:
    """bf16 bits as uint16 [N] -> float32 [N] (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def round_bf16(values: np.ndarray) -> np.ndarray:
    """float32 [N] -> float32 [N] holding the nearest bf16 values (what a site receives)."""
    return from_bf16(to_bf16(values))


@dataclass(frozen=True)
class Int8Blocks:
    """An int8 encoding of N float32 values: codes [N] in -127..127 and one scale per block of `INT8_BLOCK`."""

    codes: np.ndarray  # int8 [N]
    scales: np.ndarray  # float32 [ceil(N / INT8_BLOCK)]

    @property
    def size(self) -> int:
        return int(self.codes.size)


def quantize_int8(values: np.ndarray) -> Int8Blocks:
    """float32 [N] -> int8 codes with per-block scale max|x| / 127 (an all-zero block gets scale 0)."""
    flat = np.ascontiguousarray(values, dtype=np.float32).ravel()
    n = flat.size
    blocks = -(-n // INT8_BLOCK)
    padded = np.zeros(blocks * INT8_BLOCK, np.float32)
    padded[:n] = flat
    grid = padded.reshape(blocks, INT8_BLOCK)  # [B, INT8_BLOCK]
    scales = (np.abs(grid).max(axis=1) / np.float32(127.0)).astype(np.float32)  # [B]
    safe = np.where(scales > 0, scales, np.float32(1.0))[:, None]
    codes = np.clip(np.rint(grid / safe), -127, 127).astype(np.int8).ravel()[:n]
    return Int8Blocks(codes, scales)


def dequantize_int8(encoded: Int8Blocks) -> np.ndarray:
    """Int8Blocks of N values -> float32 [N]."""
    n = encoded.size
    per_value = np.repeat(encoded.scales, INT8_BLOCK)[:n]
    return encoded.codes.astype(np.float32) * per_value


def check_int8(codes: np.ndarray, scales: np.ndarray, source: str) -> Int8Blocks:
    """Int8Blocks from received arrays, or ValueError naming `source` and what is wrong."""
    if codes.dtype != np.int8 or codes.ndim != 1:
        raise ValueError(f"{source}: int8 codes must be a 1-D int8 array, got {codes.dtype} {codes.shape}")
    if scales.dtype != np.float32 or scales.shape != (-(-codes.size // INT8_BLOCK),):
        raise ValueError(f"{source}: int8 scales must be float32 [{-(-codes.size // INT8_BLOCK)}], got {scales.shape}")
    if not np.isfinite(scales).all() or (scales < 0).any():
        raise ValueError(f"{source}: int8 scales must be finite and non-negative")
    return Int8Blocks(codes, scales)


class ErrorFeedback:
    """One site's int8 rounding residuals per parameter, kept between rounds (in memory and, with `path`, on disk).

    `compress(flat, layout)` adds the residuals of the same parameters to a packed update, quantises the sum and
    keeps the new residuals (sum minus what is sent). A parameter seen for the first time, or whose size changed,
    starts from zero. `tag` names whose residuals they are (a run): a file written under another tag is ignored
    (and replaced at the next save), so one run's residuals never leak into the next run at the same site.
    """

    def __init__(self, path: Path | None = None, tag: str = "") -> None:
        self.path = path
        self.tag = tag
        self.residuals: dict[str, np.ndarray] = {}
        if path is not None and path.is_file():
            with np.load(path) as saved:
                if (str(saved[TAG]) if TAG in saved.files else "") == tag:
                    self.residuals = {k: saved[k].astype(np.float32) for k in saved.files if k != TAG}

    def compress(self, flat: np.ndarray, layout: Sequence[tuple[str, int]]) -> Int8Blocks:
        """float32 [N] packed update whose parameters are `layout` ((name, size) in order) -> int8 of it + residual."""
        flat = np.asarray(flat, dtype=np.float32)
        covered = sum(size for _, size in layout)
        if covered != flat.size:
            raise ValueError(f"error feedback: the layout covers {covered} values, the update has {flat.size}")
        residual = np.concatenate(
            [self._residual(name, size) for name, size in layout] or [np.zeros(0, np.float32)]
        )  # [N]
        total = flat + residual
        encoded = quantize_int8(total)
        left = total - dequantize_int8(encoded)  # [N]
        offset = 0
        for name, size in layout:
            self.residuals[name] = left[offset : offset + size].copy()
            offset += size
        self._save()
        return encoded

    def _residual(self, name: str, size: int) -> np.ndarray:
        kept = self.residuals.get(name)
        return kept if kept is not None and kept.size == size else np.zeros(size, np.float32)

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, **self.residuals, **{TAG: np.array(self.tag)})
        tmp.replace(self.path)
