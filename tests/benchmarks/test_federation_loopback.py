"""The loopback benchmark's arithmetic: a round's wall time runs to the next round's start, training is the slower
site's, and the overhead's parts add up to the overhead."""

from __future__ import annotations

import pytest

from benchmarks.federation_loopback import fixed_cost_rows, round_rows


def site(train: float, task: float, startup: float, evaluate: float = 0.0) -> dict[str, float]:
    timing = {"train_seconds": train, "task_seconds": task, "startup_seconds": startup, "num-examples": 8}
    return timing | ({"evaluate_seconds": evaluate} if evaluate else {})


HISTORY = [
    {"round": 1, "phase": "pretrain", "started_at": 1000.0, "round_time_s": 70.0, "bytes_sent": 2 * 334e6,
     "bytes_received": 2 * 167e6, "sites_sent": ["a", "b"], "exchange_s": {"train": 75.0},
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


def test_the_evaluation_inside_a_train_message_is_not_set_up():
    history = [{**HISTORY[0], "train": {"a": site(55.0, 62.0, 6.0, evaluate=4.0), "b": site(50.0, 52.0, 7.0)}}]
    (row,) = round_rows(history, subjects=20)
    assert row["evaluates"] and row["metric"] == "round 1 (pretrain + eval) overhead"
    assert row["evaluate_s"] == 4.0 and row["handler_setup_s"] == 3.0  # 62 - 55 - 4


def test_modelled_link_times_add_the_bytes_at_the_link_rate():
    first, _ = round_rows(HISTORY, subjects=20)
    assert first["mb_received_per_site"] == 167.0
    # 334 + 167 MB per site = 4.008 Gbit: 40.1 s at 100 Mbit/s, 4.0 s at 1 Gbit/s, on top of the 80 s round
    assert first["round_at_100mbit_s"] == pytest.approx(80.0 + 40.08, abs=0.05)
    assert first["round_at_1000mbit_s"] == pytest.approx(84.0, abs=0.05)
    assert first["overhead_at_100mbit_pct"] == pytest.approx(100 * (120.08 - 60) / 60, abs=0.1)


def test_fixed_cost_is_the_mean_training_round_overhead_and_gives_the_round_length_for_the_target():
    rows = round_rows(HISTORY, subjects=20)
    (training_only, with_eval) = fixed_cost_rows(rows)
    assert training_only["value"] == 20.0 and training_only["training_for_target_s"] == 200.0  # 20 s is 10 % of 200
    assert with_eval["value"] == 40.0 and with_eval["training_for_target_s"] == pytest.approx(266.7)
