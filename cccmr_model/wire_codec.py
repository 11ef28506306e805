"""Parameters in each `federation.wire` format, both directions (cccmr_model/compression.py explains the formats).

- Down (`encode_model` / `decode_model`), train and evaluate messages: fp32 is `wire.encode`'s [manifest, float32
  values]; bf16 and int8 send [manifest, bf16 bits (uint16)], which the site decodes to float32: the rounded
  values it trains or evaluates from.
- Up (`encode_update` / `decode_reply`), train replies: fp32 sends the trained groups as they are (`wire.encode`);
  bf16 sends [manifest, bf16 bits of trained - received]; int8 sends [manifest, int8 codes, float32 block scales]
  of that update plus the site's error-feedback residual (`residual_path`, kept per run). The server adds the
  decoded update to its fp32 master copy (`decode_reply`), so its checks and the aggregation see trained weights
  in every format.
- Central DP (`clip_update`): the site clips the update as sent. int8 scales the block scales, bf16 scales the
  values and rounds them toward zero, so the decoded update's L2 norm never exceeds the clipping norm.

Every decode error is a PackingError naming `source`. No flwr here: the ClientApp, the server and a site worker
share these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cccmr_model.compression import ErrorFeedback, check_int8, dequantize_int8, from_bf16, to_bf16
from cccmr_model.errors import CccmrError
from cccmr_model.packing import MANIFEST, PACKED, PackingError, unpack
from cccmr_model.wire import decode, encode

# The dtypes after the manifest, per format and direction.
MODEL_DTYPES = {"fp32": (np.float32,), "bf16": (np.uint16,), "int8": (np.uint16,)}
UPDATE_DTYPES = {"bf16": (np.uint16,), "int8": (np.int8, np.float32)}
SHRINK = 1.0 - 2.0**-20  # a clipping factor whose rounded result still exceeds the norm is lowered by this


def residual_path(cache_path: Path) -> Path:
    """Where an int8 site keeps its error-feedback residuals: its cache folder."""
    return Path(cache_path) / "wire" / "residual.npz"


def encode_model(state: Mapping[str, np.ndarray], wire: str) -> list[np.ndarray]:
    """The model as the server sends it: float32 values (fp32) or their bf16 bits (bf16, int8)."""
    arrays = encode(state)
    return arrays if wire == "fp32" else [arrays[0], to_bf16(arrays[1])]


def decode_model(arrays: Sequence[np.ndarray], wire: str, source: str) -> dict[str, np.ndarray]:
    """The float32 parameters a site received (views into one buffer); PackingError naming `source`."""
    if wire == "fp32":
        return decode(arrays, source)
    _check_dtypes(arrays, MODEL_DTYPES[wire], source)
    return unpack({MANIFEST: arrays[0], PACKED: from_bf16(arrays[1])}, source)


def encode_update(
    trained: Mapping[str, np.ndarray],
    received: Mapping[str, np.ndarray],
    wire: str,
    *,
    residuals: Path | None = None,
    run_key: str = "",
) -> list[np.ndarray]:
    """A site's reply: the trained groups (fp32) or their update against the `received` values (bf16, int8; int8
    keeps its error feedback in `residuals` under `run_key`, in memory only without a path)."""
    if wire == "fp32":
        return encode(trained)
    missing = [k for k in trained if k not in received]
    if missing:
        raise CccmrError(f"trained parameter {missing[0]} was not received: no update to send")
    update = {k: np.asarray(v, np.float32) - received[k] for k, v in trained.items()}
    return encode_difference(update, wire, ErrorFeedback(residuals, run_key) if wire == "int8" else None)


def encode_difference(
    update: Mapping[str, np.ndarray], wire: str, feedback: ErrorFeedback | None = None
) -> list[np.ndarray]:
    """[manifest, bf16 bits] (bf16) or [manifest, int8 codes, scales] (int8; with `feedback`'s residuals)."""
    manifest, flat = encode(update)
    if wire == "bf16":
        return [manifest, to_bf16(flat)]
    layout = [(name, int(np.size(value))) for name, value in update.items()]
    blocks = (feedback or ErrorFeedback()).compress(flat, layout)
    return [manifest, blocks.codes, blocks.scales]


def decode_update(arrays: Sequence[np.ndarray], wire: str, source: str) -> dict[str, np.ndarray]:
    """The float32 update a bf16 or int8 reply carries; PackingError naming `source`."""
    _check_dtypes(arrays, UPDATE_DTYPES[wire], source)
    return unpack({MANIFEST: arrays[0], PACKED: _update_values(arrays, wire, source)}, source)


def decode_reply(
    arrays: Sequence[np.ndarray], wire: str, source: str, master: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The trained groups a reply stands for: as sent (fp32), or `master` plus the sent update (bf16, int8). A name
    `master` lacks, or a shape it does not have, is left as sent, for the reply checks to name it."""
    if wire == "fp32":
        return decode(arrays, source)
    update = decode_update(arrays, wire, source)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is an infinity the reply checks refuse
        return {k: master[k] + u if k in master and np.shape(master[k]) == u.shape else u for k, u in update.items()}


def clip_update(arrays: Sequence[np.ndarray], wire: str, clipping_norm: float) -> tuple[list[np.ndarray], float]:
    """(the bf16 or int8 update scaled to L2 norm <= `clipping_norm` as decoded, its norm before). An update within
    the norm, or one that is not finite, is returned as it is (the server refuses the latter)."""
    values = _update_values(arrays, wire, "update to clip").astype(np.float64)
    norm = _norm(values)
    if not math.isfinite(norm) or norm <= clipping_norm:
        return list(arrays), norm
    factor = clipping_norm / norm
    while True:
        if wire == "bf16":
            clipped = [arrays[0], _bf16_toward_zero(values * factor)]
        else:
            clipped = [arrays[0], arrays[1], _float32_toward_zero(arrays[2].astype(np.float64) * factor)]
        if _norm(_update_values(clipped, wire, "clipped update")) <= clipping_norm:
            return clipped, norm
        factor *= SHRINK


def _update_values(arrays: Sequence[np.ndarray], wire: str, source: str) -> np.ndarray:
    """The float32 values of an encoded update (no manifest check)."""
    if wire == "bf16":
        return from_bf16(arrays[1])
    try:
        blocks = check_int8(np.asarray(arrays[1]), np.asarray(arrays[2]), source)
    except ValueError as err:
        raise PackingError(str(err)) from None
    with np.errstate(over="ignore"):
        return dequantize_int8(blocks)


def _check_dtypes(arrays: Sequence[np.ndarray], dtypes: tuple[type, ...], source: str) -> None:
    """PackingError unless `arrays` are a uint8 manifest followed by 1-D arrays of `dtypes`."""
    want = [np.dtype(np.uint8), *map(np.dtype, dtypes)]
    got = [np.asarray(a) for a in arrays]
    if [a.dtype for a in got] != want or any(a.ndim != 1 for a in got):
        shown = ", ".join(f"{a.dtype}{list(a.shape)}" for a in got[:4]) + (", ..." if len(got) > 4 else "")
        expected = ", ".join(f"{d}[n]" for d in want)
        raise PackingError(f"{source}: expected the arrays ({expected}), got {len(got)} arrays ({shown})")


def _norm(values: np.ndarray) -> float:
    flat = np.asarray(values, np.float64).ravel()
    return float(np.sqrt(np.dot(flat, flat)))


def _float32_toward_zero(values: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded toward zero (never larger in magnitude)."""
    rounded = values.astype(np.float32)
    over = np.abs(rounded.astype(np.float64)) > np.abs(values)
    rounded[over] = np.nextafter(rounded[over], np.float32(0))
    return rounded


def _bf16_toward_zero(values: np.ndarray) -> np.ndarray:
    """float64 -> bf16 bits rounded toward zero: float32 toward zero, then its lower 16 bits cut."""
    bits = _float32_toward_zero(values).view(np.uint32)
    return (bits >> np.uint32(16)).astype(np.uint16)
