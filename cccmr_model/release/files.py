"""The files of a release folder, their content hash, and the versions a loader accepts.

A release is a folder of plain files; `release.json` lists the sha256 of every other file and a content hash over
that list, so a loader detects a missing, truncated or modified file before it trusts the weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

FORMAT_VERSION = 1  # bump when the folder layout or the weight key set changes

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
TRAINING_FILE = "training.json"
CARD_FILE = "MODEL_CARD.md"
MANIFEST_FILE = "release.json"
# Every file whose sha256 the manifest records (the manifest itself is checked field by field).
HASHED_FILES: tuple[str, ...] = (WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, TRAINING_FILE, CARD_FILE)

# Parameter-name prefixes a release keeps: the two cine encoders and the fusion MLP. The LGE encoder, the
# per-sequence heads, the uncertainty weights and any optimizer state are training-only and stay behind.
RELEASE_PREFIXES: tuple[str, ...] = ("encoders.cine_4ch.", "encoders.cine_sax.", "fusion.")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_hash(file_hashes: Mapping[str, str]) -> str:
    """One sha256 over the (name, sha256) list in name order: the identity of a release."""
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}\0{file_hashes[name]}\n".encode())
    return digest.hexdigest()


def is_release_key(key: str) -> bool:
    return key.startswith(RELEASE_PREFIXES)
