"""benchmarks/explain_speed.py: one row per timed step, seconds, on the tiny config with --quick."""

from __future__ import annotations

from benchmarks import explain_speed


def test_quick_run_times_each_step() -> None:
    rows = explain_speed.run(quick=True)
    metrics = [row["metric"] for row in rows]
    assert metrics == ["predict wall", "saliency map wall", "saliency + slice ablation wall", "overlays wall"]
    assert all(row["benchmark"] == "explain_speed" and row["unit"] == "s" and row["value"] > 0 for row in rows)
    assert all("tiny: 4CH (1, 1, 8, 64, 64)" in row["note"] for row in rows)
