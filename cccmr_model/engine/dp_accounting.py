"""A site's DP-SGD privacy ledger: the opacus RDP accountant's history, persisted as JSON.

The ledger lists every sampled Gaussian mechanism run on the site's data as (noise multiplier, sample rate, steps).
Epsilon at `delta` is recomputed from the whole list, so it accumulates across rounds, phases, federated runs and
process restarts for as long as the file is kept. Steps are written *before* they are taken (`reserve`), so a crash
during training can only over-count the privacy spent, never under-count it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from cccmr_model.errors import CccmrError

LEDGER_VERSION = 1

Entry = tuple[float, float, int]  # noise multiplier, sample rate, steps


@dataclass
class PrivacyLedger:
    path: Path
    history: list[Entry]

    @classmethod
    def load(cls, path: str | Path) -> PrivacyLedger:
        """The ledger at `path` (an empty one when the file does not exist yet)."""
        path = Path(path)
        if not path.exists():
            return cls(path, [])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != LEDGER_VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {LEDGER_VERSION}")
            history = [(float(z), float(q), int(n)) for z, q, n in data["history"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CccmrError(
                f"{path}: unreadable DP-SGD privacy ledger ({exc}); it records the privacy already spent on this "
                "site's data, so training stops rather than start from zero"
            ) from exc
        return cls(path, history)

    def epsilon(self, delta: float, extra: Entry | None = None) -> float:
        """Epsilon at `delta` of everything recorded (plus `extra`, not recorded); 0 for an empty ledger."""
        history = self.history + ([extra] if extra is not None and extra[2] > 0 else [])
        if not history:
            return 0.0
        from opacus.accountants import RDPAccountant  # lazily: see engine/dp_sgd.py

        accountant = RDPAccountant()
        accountant.history = list(history)
        return float(accountant.get_epsilon(delta))

    def affordable_steps(self, noise_multiplier: float, sample_rate: float, planned: int, *, delta: float,
                         budget: float) -> int:  # fmt: skip
        """The largest number of steps (at most `planned`) after which epsilon at `delta` stays within `budget`."""
        if self.epsilon(delta) > budget:
            return 0
        if self.epsilon(delta, (noise_multiplier, sample_rate, planned)) <= budget:
            return planned
        low, high = 0, planned  # epsilon grows with the steps: low fits, high does not
        while high - low > 1:
            mid = (low + high) // 2
            if self.epsilon(delta, (noise_multiplier, sample_rate, mid)) <= budget:
                low = mid
            else:
                high = mid
        return low

    def reserve(self, noise_multiplier: float, sample_rate: float, steps: int) -> None:
        """Record `steps` steps of the sampled Gaussian mechanism and write the ledger to disk (atomically)."""
        if steps <= 0:
            return
        if not (noise_multiplier > 0 and 0 < sample_rate <= 1 and math.isfinite(noise_multiplier)):
            raise ValueError(f"bad DP-SGD step parameters: noise {noise_multiplier}, sample rate {sample_rate}")
        self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        payload = {"version": LEDGER_VERSION, "accountant": "rdp", "history": [list(e) for e in self.history]}
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)
