"""Logging and progress for the command line: logs and progress go to stderr, results to stdout or files."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_QUIET = False


def setup_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    """Configure the root logger on stderr; `quiet` silences progress and info, `verbose` adds debug lines."""
    global _QUIET
    _QUIET = quiet
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )


def is_quiet() -> bool:
    return _QUIET


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items`, showing a progress bar on stderr unless quiet or stderr is not a terminal.

    When stderr is not a terminal (CI, log files) it logs one line per 10% instead of drawing a bar.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if _QUIET:
        yield from items
        return
    if sys.stderr.isatty():
        from rich.progress import Progress

        with Progress(transient=True, console=_stderr_console()) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
        return
    log = logging.getLogger("cccmr.progress")
    step = max(1, (total or 10) // 10)
    for index, item in enumerate(items, start=1):
        yield item
        if total and (index % step == 0 or index == total):
            log.info("%s: %d/%d", description, index, total)


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)
