"""Reply timing metrics: seconds only, start-up measured from this process's real start."""

from __future__ import annotations

import time

from cccmr_model.site.timing import process_start_time, task_timing


def test_process_start_is_in_the_past_and_recent_enough():
    started = process_start_time()
    assert started is not None
    assert 0 <= time.time() - started < 24 * 3600


def test_task_timing_measures_the_handler_and_the_time_before_it():
    handler_started = time.time()
    time.sleep(0.05)
    timing = task_timing(handler_started)
    assert set(timing) == {"task_seconds", "startup_seconds"}
    assert 0.05 <= timing["task_seconds"] < 5
    assert abs(timing["startup_seconds"] - (handler_started - process_start_time())) < 0.1
    assert timing["startup_seconds"] > 0  # this process started before the handler did
