"""Parameters packed into one buffer for the wire: a federated message carries two arrays instead of ~500.

Flower sends every array of a message as its own content-addressed object, one HTTP request per object and hop.
The default model's phase groups are about 1,060 objects (870 of them under 100 kB), so the per-request cost,
not the 335 MB, set the time of a round. Packed, the same parameters are one float32 buffer (about 67 chunks of
5 MB) plus a manifest: a JSON list of `[name, shape]`, sent as uint8 bytes.
`unpack` returns views into the buffer (no copy). It checks the manifest against the buffer and names `source`
in every error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from cccmr_model.errors import CccmrError

PACKED = "packed"  # the values, 1-D, in manifest order
MANIFEST = "manifest"  # uint8: UTF-8 JSON [[name, [dims...]], ...]


class PackingError(CccmrError):
    """Packed arrays that cannot be unpacked (wrong keys, dtype, manifest or size)."""


def pack(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`{MANIFEST: uint8 JSON, PACKED: 1-D}` holding every array of `state` in its order; all share one dtype."""
    dtype = np.asarray(next(iter(state.values()))).dtype if state else np.dtype(np.float32)
    wrong = [k for k, v in state.items() if np.asarray(v).dtype != dtype]
    if wrong:
        raise PackingError(f"cannot pack {wrong[0]}: dtype {np.asarray(state[wrong[0]]).dtype}, expected {dtype}")
    flat = np.empty(sum(np.size(v) for v in state.values()), dtype=dtype)  # N
    offset = 0
    for value in state.values():
        n = np.size(value)
        flat[offset : offset + n] = np.ravel(value)
        offset += n
    return {MANIFEST: manifest_array(state), PACKED: flat}


def manifest_array(state: Mapping[str, np.ndarray]) -> np.ndarray:
    """The uint8 manifest of `state` (names and shapes in its order), without packing its values."""
    manifest = [[name, list(np.shape(value))] for name, value in state.items()]
    return np.frombuffer(json.dumps(manifest, separators=(",", ":")).encode(), dtype=np.uint8).copy()


def unpack(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """The named arrays of a packed mapping, as views into its buffer."""
    if set(arrays) != {MANIFEST, PACKED}:
        raise PackingError(f"{source}: expected the arrays {MANIFEST!r} and {PACKED!r}, got {sorted(arrays)[:5]}")
    flat, raw = np.asarray(arrays[PACKED]), np.asarray(arrays[MANIFEST])
    if flat.ndim != 1 or raw.dtype != np.uint8:
        raise PackingError(f"{source}: {PACKED} must be 1-D and {MANIFEST} uint8")
    manifest = _manifest(raw, source)
    total = sum(math.prod(shape) for _, shape in manifest)
    if total != flat.size:
        raise PackingError(f"{source}: the manifest describes {total} values, the buffer holds {flat.size}")
    out, offset = {}, 0
    for name, shape in manifest:
        n = math.prod(shape)
        out[name] = flat[offset : offset + n].reshape(shape)
        offset += n
    return out


def weighted_average(buffers: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum_i w_i / sum(w) x buffer_i, accumulated in the buffers' dtype in the given order (as Flower's
    `aggregate_arrayrecords` does it array by array, so packing changes no bit of the average)."""
    total = float(sum(weights))
    result = buffers[0] * (weights[0] / total)
    for buffer, weight in zip(buffers[1:], weights[1:], strict=True):
        result += buffer * (weight / total)
    return result


def _manifest(raw: np.ndarray, source: str) -> list[tuple[str, list[int]]]:
    try:
        manifest = json.loads(raw.tobytes().decode())
        entries = [(str(name), [int(d) for d in shape]) for name, shape in manifest]
    except (ValueError, TypeError) as err:
        raise PackingError(f"{source}: unreadable {MANIFEST} ({err})") from None
    if len({name for name, _ in entries}) != len(entries):
        raise PackingError(f"{source}: a parameter name appears twice in the {MANIFEST}")
    if any(d < 0 for _, shape in entries for d in shape):
        raise PackingError(f"{source}: negative dimension in the {MANIFEST}")
    return entries
