"""The loopback benchmark's arithmetic: a round's wall time runs to the next round's start, training is the slower
site's, and the overhead's parts add up to the overhead."""

from __future__ import annotations

import pytest

from benchmarks.federation_loopback import round_rows


def site(train: float, task: float, startup: float) -> dict[str, float]:
    return {"train_seconds": train, "task_seconds": task, "startup_seconds": startup, "num-examples": 8}


HISTORY = [
    {"round": 1, "phase": "pretrain", "started_at": 1000.0, "round_time_s": 70.0, "bytes_sent": 2 * 334e6,
     "sites_sent": ["a", "b"], "exchange_s": {"train": 75.0},
     "train": {"a": site(55.0, 57.0, 6.0), "b": site(60.0, 62.0, 7.0)}},
    {"round": 2, "phase": "fim", "started_at": 1080.0, "round_time_s": 90.0, "bytes_sent": 2 * 558e6,
     "sites_sent": ["a", "b"], "exchange_s": {"train": 70.0, "evaluate": 10.0},
     "train": {"a": site(50.0, 52.0, 6.0), "b": site(40.0, 43.0, 5.0)}},
]  # fmt: skip


def test_round_rows_split_the_overhead():
    first, last = round_rows(HISTORY, subjects=20)
    assert first["round_s"] == 80.0  # to the next round's start, not the strategy's own round time
    assert first["train_s"] == 60.0 and first["overhead_s"] == 20.0
    assert first["value"] == pytest.approx(100 * 20 / 60)
    assert (first["startup_s"], first["handler_setup_s"], first["server_s"]) == (7.0, 2.0, 5.0)
    assert first["transfer_and_polling_s"] == 75.0 - 62.0 - 7.0
    assert first["mb_sent_per_site"] == 334.0
    assert last["round_s"] == 90.0  # the last round: the strategy's own round time
    assert last["train_s"] == 50.0 and last["evaluate_s"] == 10.0 and last["server_s"] == 10.0
