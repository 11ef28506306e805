"""Where a site's time goes in one round, as two aggregate metrics of the training reply (seconds, no data):
`startup_seconds`, from the start of this ClientApp process (SuperNodes run every message in a fresh one) to the
handler's first line, and `task_seconds`, the handler itself (set-up, training, packing the reply). The engine adds
`train_seconds`, its epoch loops alone, and a train message that also evaluates the received model adds
`evaluate_seconds`. The server's round time minus these is the federation's own overhead."""

from __future__ import annotations

import os
import time


def process_start_time() -> float | None:
    """This process's start as a Unix time (Linux /proc and CLOCK_BOOTTIME), or None where they are missing."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


def task_timing(handler_started: float) -> dict[str, float]:
    """`task_seconds` since `handler_started` (time.time()) and, where known, `startup_seconds` before it."""
    timing = {"task_seconds": time.time() - handler_started}
    process_started = process_start_time()
    if process_started is not None:
        timing["startup_seconds"] = max(0.0, handler_started - process_started)
    return timing
