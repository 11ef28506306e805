from __future__ import annotations

import numpy as np

from cccmr_model.config import load_config
from cccmr_model.splits import split_site, split_train_val


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


class _Site:
    """What `split_site` reads of a site's dataset."""

    def __init__(self, labels: list[int], subtypes: list[int] | None) -> None:
        self.labels = np.array(labels)
        if subtypes is not None:
            self.subtypes = np.array(subtypes)

    def __len__(self) -> int:
        return len(self.labels)


def test_split_site_stratifies_screening_on_the_label() -> None:
    config = load_config("tiny", ["data.val_fraction=0.25"])
    site = _Site([0] * 12 + [1] * 8, [-1] * 12 + [0, 1, 2, 3, 4, 0, 1, 2])
    train, val = split_site(site, config)
    expected = split_train_val(site.labels, 0.25, config.seed)
    assert np.array_equal(train, expected[0]) and np.array_equal(val, expected[1])


def test_split_site_stratifies_subtyping_on_the_subtype_healthy_as_its_own_group() -> None:
    config = load_config("tiny", ["task=subtyping", "data.val_fraction=0.25"])
    subtypes = [-1] * 8 + [0] * 4 + [1] * 4 + [2] * 2 + [3] * 2 + [4] * 2
    site = _Site([0] * 8 + [1] * 14, subtypes)
    train, val = split_site(site, config)
    expected = split_train_val(np.array(subtypes), 0.25, config.seed)
    assert np.array_equal(train, expected[0]) and np.array_equal(val, expected[1])
    assert set(site.subtypes[val]) == set(site.subtypes[train]) == {-1, 0, 1, 2, 3, 4}  # every subtype in both
    assert len(split_site(_Site([0, 1, 0, 1], None), config)[1]) == 1  # no subtypes: one group
