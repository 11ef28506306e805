"""Keep every round checkpoint of a federated run: the ServerApp keeps only its newest two, but the demo's t-SNE
needs the global model after the last pretrain round and after the last FIM round."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from cccmr_model.run_folder import CHECKPOINT_NAME, checkpoint_file


class CheckpointKeeper:
    """Hard-links (or copies) each `round-NNNN.safetensors` appearing in `source` into `target`, from a thread."""

    def __init__(self, source: Path, target: Path, interval_s: float = 0.2) -> None:
        self.source, self.target, self.interval_s = Path(source), Path(target), interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-keeper", daemon=True)

    def __enter__(self) -> CheckpointKeeper:
        self.target.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sweep()

    def sweep(self) -> None:
        """Keep what is in `source` now (the files are complete: the server renames them into place)."""
        if not self.source.is_dir():
            return
        for path in self.source.iterdir():
            kept = self.target / path.name
            if not CHECKPOINT_NAME.match(path.name) or kept.exists():  # the server's tmp files do not match
                continue
            try:
                os.link(path, kept)
            except FileNotFoundError:
                continue  # rotated away between listing and linking
            except OSError:  # no hard links on this file system
                try:
                    shutil.copy2(path, kept)
                except FileNotFoundError:
                    continue

    def path(self, server_round: int) -> Path | None:
        """The kept checkpoint of `server_round`, if it was seen."""
        path = checkpoint_file(self.target, server_round)
        return path if path.is_file() else None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sweep()
