"""The Feature Interaction Module losses against hand-computed values (paper eqs. 1-4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cccmr_model.losses import FixedWeighting, UncertaintyWeighting, focal_loss, fsa_loss


def label_block_mean(sim: Tensor, labels: Tensor) -> Tensor:
    """The label-averaged block matrix by hand: an (N, N) matrix averaged per (label i, label j) block -> (C', C').

    Blocks are ordered by ascending label, so the result does not depend on the order of the batch.
    """
    _, inverse = torch.unique(labels, sorted=True, return_inverse=True)  # N
    onehot = F.one_hot(inverse, num_classes=int(inverse.max()) + 1).to(sim.dtype)  # N, C'
    counts = onehot.sum(dim=0)  # C'
    block_sums = onehot.T @ sim @ onehot  # C', C'
    return block_sums / (counts[:, None] * counts[None, :])


def test_focal_loss_matches_hand_computed_case() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p(true) = 0.5, then 0.75
    target = torch.tensor([0, 0])
    expected = (-(0.5**2) * math.log(0.5) - (0.25**2) * math.log(0.75)) / 2
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_with_gamma_zero_is_cross_entropy_for_five_classes() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=generator) * 3
    target = torch.randint(0, 5, (7,), generator=generator)
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(F.cross_entropy(logits, target).item())


def test_focal_loss_down_weights_easy_samples_and_stays_finite_when_confidently_wrong() -> None:
    easy = focal_loss(torch.tensor([[4.0, 0.0]]), torch.tensor([0]), gamma=2.0)
    assert easy.item() < 0.01 * F.cross_entropy(torch.tensor([[4.0, 0.0]]), torch.tensor([0])).item()
    logits = torch.tensor([[1000.0, -1000.0]], requires_grad=True)
    loss = focal_loss(logits, torch.tensor([1]), gamma=2.0)
    loss.backward()
    assert loss.item() == pytest.approx(2000.0)
    assert torch.isfinite(logits.grad).all()


def test_fsa_loss_sample_level_matches_eq2_by_hand() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    u = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # cosine ignores the norm: sim = identity
    labels = torch.tensor([0, 1])
    # Every row and column: -log(e^1 / (e^1 + e^0)) = log(1 + e^-1).
    loss = fsa_loss(v, u, labels, label_averaged=False)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_fsa_loss_label_averaged_matches_hand_computed_block_matrix() -> None:
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # sim = [[1,0,0],[1,0,0],[0,1,1]]; block means -> M = [[0.5, 0], [0.5, 1]].
    assert torch.allclose(label_block_mean(v @ u.T, labels), torch.tensor([[0.5, 0.0], [0.5, 1.0]]))
    for temperature in (1.0, 0.5):
        m = [[0.5 / temperature, 0.0], [0.5 / temperature, 1.0 / temperature]]
        rows = [-m[0][0] + math.log(math.exp(m[0][0]) + math.exp(m[0][1]))]
        rows.append(-m[1][1] + math.log(math.exp(m[1][0]) + math.exp(m[1][1])))
        cols = [-m[0][0] + math.log(math.exp(m[0][0]) + math.exp(m[1][0]))]
        cols.append(-m[1][1] + math.log(math.exp(m[0][1]) + math.exp(m[1][1])))
        expected = (sum(rows) / 2 + sum(cols) / 2) / 2
        loss = fsa_loss(v, u, labels, temperature=temperature)
        assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("label_averaged", [True, False])
def test_fsa_loss_is_invariant_to_batch_permutation(label_averaged: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    v, u = torch.randn(9, 6, generator=generator), torch.randn(9, 6, generator=generator)
    labels = torch.tensor([0, 1, 2, 1, 0, 0, 2, 1, 1])
    perm = torch.randperm(9, generator=generator)
    original = fsa_loss(v, u, labels, temperature=0.3, label_averaged=label_averaged)
    permuted = fsa_loss(v[perm], u[perm], labels[perm], temperature=0.3, label_averaged=label_averaged)
    assert permuted.item() == pytest.approx(original.item(), rel=1e-5)
    # Reordering u alone breaks the patient pairing, so the loss is not blind to the order of the pairs.
    if not label_averaged:
        shuffled = fsa_loss(v, u[perm], labels, temperature=0.3, label_averaged=False)
        assert shuffled.item() != pytest.approx(original.item(), rel=1e-3)


def test_fsa_loss_with_one_class_is_a_differentiable_zero() -> None:
    v = torch.randn(4, 3, requires_grad=True)
    u = torch.randn(4, 3, requires_grad=True)
    loss = fsa_loss(v, u, torch.tensor([1, 1, 1, 1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(v.grad, torch.zeros_like(v)) and torch.equal(u.grad, torch.zeros_like(u))


def test_fsa_loss_pulls_same_label_features_together() -> None:
    v = torch.tensor([[1.0, 0.2], [0.1, 1.0]], requires_grad=True)
    u = torch.tensor([[0.2, 1.0], [1.0, 0.1]])  # crossed: each label's u lies near the other label's v
    labels = torch.tensor([0, 1])
    before = fsa_loss(v, u, labels).item()
    assert F.cosine_similarity(v[0:1], u[0:1]).item() < F.cosine_similarity(v[0:1], u[1:2]).item()
    optimizer = torch.optim.SGD([v], lr=0.5)
    for _ in range(50):
        optimizer.zero_grad()
        fsa_loss(v, u, labels).backward()
        optimizer.step()
    assert fsa_loss(v, u, labels).item() < before
    assert F.cosine_similarity(v[0:1], u[0:1]).item() > F.cosine_similarity(v[0:1], u[1:2]).item()
    assert F.cosine_similarity(v[1:2], u[1:2]).item() > F.cosine_similarity(v[1:2], u[0:1]).item()


def test_uncertainty_weighting_matches_eq4_by_hand() -> None:
    weighting = UncertaintyWeighting(["a", "b"])
    assert torch.equal(weighting.log_sigma.detach(), torch.zeros(2))
    with torch.no_grad():
        weighting.log_sigma[1] = math.log(2.0)  # sigma_b = 2
    total = weighting({"a": torch.tensor(1.0), "b": torch.tensor(2.0)})
    expected = 1.0 / 1.0 + math.log(1 + 1) + 2.0 / 4.0 + math.log(2 + 1)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weighting.sigmas() == pytest.approx({"a": 1.0, "b": 2.0})


@pytest.mark.parametrize(("loss_value", "sigma_grows"), [(1.0, True), (0.1, False)])
def test_sigma_gets_gradients_and_moves_as_eq4_implies(loss_value: float, sigma_grows: bool) -> None:
    # d/ds [L exp(-2s) + log(exp(s) + 1)] at s = 0 is -2L + 1/2: a large loss raises sigma, a small one lowers it.
    weighting = UncertaintyWeighting(["cls:x"])
    weighting({"cls:x": torch.tensor(loss_value)}).backward()
    assert weighting.log_sigma.grad.item() == pytest.approx(-2 * loss_value + 0.5, rel=1e-6)
    torch.optim.SGD(weighting.parameters(), lr=0.1).step()
    assert (weighting.sigmas()["cls:x"] > 1.0) == sigma_grows


def test_uncertainty_weighting_passes_gradient_scaled_by_inverse_variance_to_losses() -> None:
    weighting = UncertaintyWeighting(["a"])
    with torch.no_grad():
        weighting.log_sigma.fill_(math.log(2.0))
    loss = torch.tensor(3.0, requires_grad=True)
    weighting({"a": loss}).backward()
    assert loss.grad.item() == pytest.approx(0.25)


def test_fixed_weighting_sums_terms_and_has_no_parameters() -> None:
    weighting = FixedWeighting(["a", "b", "c"])
    total = weighting({"a": torch.tensor(1.0), "b": torch.tensor(2.5), "c": torch.tensor(0.5)})
    assert total.item() == pytest.approx(4.0)
    assert list(weighting.parameters()) == []
    assert weighting.sigmas() == {"a": 1.0, "b": 1.0, "c": 1.0}


@pytest.mark.parametrize("cls", [UncertaintyWeighting, FixedWeighting])
def test_weighting_rejects_mismatched_terms(cls: type) -> None:
    weighting = cls(["a", "b"])
    with pytest.raises(KeyError, match="do not match"):
        weighting({"a": torch.tensor(1.0)})
    with pytest.raises(ValueError):
        cls(["a", "a"])
