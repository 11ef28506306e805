"""The wire form of parameters in every CC-CMR message, shared by the ServerApp and the ClientApp: an
ArrayRecord of two arrays, the packed values and their manifest (see cccmr_model/packing.py for why)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from cccmr_model.packing import pack, unpack


def to_array_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named float32 parameters (numpy) packed into one ArrayRecord."""
    return ArrayRecord({k: Array(v) for k, v in pack(state).items()})


def from_array_record(record: Mapping[str, Array], source: str) -> dict[str, np.ndarray]:
    """Named parameters (views into the packed buffer); PackingError names `source` when it is not packed."""
    return unpack({k: v.numpy() for k, v in record.items()}, source)
