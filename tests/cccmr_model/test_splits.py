from __future__ import annotations

import numpy as np

from cccmr_model.splits import split_train_val


def test_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.array([0] * 30 + [1] * 10)
    train, val = split_train_val(labels, 0.2, seed=0)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(40))
    assert (labels[val] == 0).sum() == 6 and (labels[val] == 1).sum() == 2
    again = split_train_val(labels, 0.2, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, split_train_val(labels, 0.2, seed=1)[1])


def test_small_classes_keep_one_in_each_part() -> None:
    _, val = split_train_val(np.array([0, 0, 0, 0, 1, 1]), 0.1, seed=0)
    assert set(np.array([0, 0, 0, 0, 1, 1])[val]) == {0, 1}
    assert len(split_train_val(np.array([0, 1, 1]), 0.0, seed=0)[1]) == 0
