"""benchmarks/support/arguments.py: the release benchmarks' shared command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.support.arguments import release_benchmark_parser


def test_one_run_by_default_and_several_when_asked() -> None:
    one = release_benchmark_parser("x").parse_args(["--ablation", "/tmp/a"])
    assert (one.ablation, one.seeds, one.run) == (Path("/tmp/a"), [0, 1, 2], "fim-ua")
    several = release_benchmark_parser("x", several_runs=True).parse_args(["--ablation", "a", "--runs", "control"])
    assert several.runs == ["control"] and not hasattr(several, "run")


def test_the_ablation_folder_is_required() -> None:
    with pytest.raises(SystemExit):
        release_benchmark_parser("x").parse_args(["--seeds", "3"])
