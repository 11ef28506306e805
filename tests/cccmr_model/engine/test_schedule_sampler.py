from __future__ import annotations

import numpy as np
import pytest

from cccmr_model.engine.sampler import epoch_batches, samples_in
from cccmr_model.engine.schedule import lr_at, warmup_fraction, window_progress


def test_lr_cosine_endpoints_and_warmup() -> None:
    assert lr_at(0.0, base_lr=1e-3) == pytest.approx(1e-3)
    assert lr_at(0.5, base_lr=1e-3) == pytest.approx(5e-4)
    assert lr_at(1.0, base_lr=1e-3, min_lr=1e-5) == pytest.approx(1e-5)
    assert lr_at(0.05, base_lr=1.0, warmup_fraction=0.1) == pytest.approx(0.5)
    assert lr_at(0.1, base_lr=1.0, warmup_fraction=0.1) == pytest.approx(1.0)


def test_window_slices_follow_the_whole_phase_curve() -> None:
    whole = [lr_at(window_progress(s, 8, (0.0, 1.0)), base_lr=1.0) for s in range(8)]
    halves = [lr_at(window_progress(s, 4, w), base_lr=1.0) for w in ((0.0, 0.5), (0.5, 1.0)) for s in range(4)]
    assert whole == pytest.approx(halves)
    assert warmup_fraction(10, 50, (0.0, 0.5)) == pytest.approx(0.1)


def test_a_warm_up_s_first_step_already_moves_the_weights() -> None:
    """Steps are placed at their middle: the first step of a warm-up gets lr > 0 (no wasted, all-zero update)."""
    first = lr_at(window_progress(0, 40, (0.0, 1.0)), base_lr=1.0, warmup_fraction=warmup_fraction(40, 40, (0, 1)))
    assert first == pytest.approx(1.0 / 80)


@pytest.mark.parametrize("n_pos", [1, 3, 10])
def test_every_batch_holds_both_classes(n_pos: int) -> None:
    labels = np.array([0] * 20 + [1] * n_pos)
    batches = epoch_batches(labels, batch_size=8, resample_factor=4, seed=0, epoch=0)
    for batch in batches:
        assert {int(labels[i]) for i, _ in batch} == {0, 1}
    counts = np.bincount([i for b in batches for i, _ in b], minlength=len(labels))
    assert np.all(counts[:20] == 4)  # the four-fold resampling of the majority class
    assert samples_in(batches) >= 4 * len(labels)
    assert max(len(b) for b in batches) <= 9


def test_batches_are_a_pure_function_of_seed_and_epoch() -> None:
    labels = np.array([0, 1] * 7)
    a = epoch_batches(labels, batch_size=4, resample_factor=2, seed=1, epoch=3)
    assert a == epoch_batches(labels, batch_size=4, resample_factor=2, seed=1, epoch=3)
    assert a != epoch_batches(labels, batch_size=4, resample_factor=2, seed=1, epoch=4)
