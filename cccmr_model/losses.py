"""Losses of the Feature Interaction Module (CC-CMR paper, sections 2.2 and 2.3).

- `focal_loss`: the classification (CLS) loss, eq. 1 (focal loss without the alpha factor).
- `fsa_loss`: the feature-space-alignment (FSA) loss, eq. 2 with the cosine similarity of eq. 3; by default the
  paper's practical version, where the similarity matrix is first averaged within label blocks.
- `UncertaintyWeighting`: eq. 4, one learnable sigma per loss term; `FixedWeighting` is the "FIM without U-A"
  ablation (every weight 1).

The FSA loss follows open_clip's `ClipLoss` in shape: similarity logits, ground truth, symmetric cross-entropy / 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Mean over the batch of `-(1 - p_i)**gamma * log(p_i)`, `p_i` the softmax probability of the true class.

    logits (N, C) for any C >= 2, target (N,) integer class indices. Computed from log-softmax, so it stays finite
    for confidently wrong logits; gamma 0 gives the plain cross-entropy.
    """
    if logits.ndim != 2 or target.ndim != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"focal_loss expects logits (N, C) and target (N,), got {tuple(logits.shape)}, {tuple(target.shape)}"
        )
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)  # N
    modulation = (1.0 - log_p.exp()).clamp(min=0.0).pow(gamma)  # N
    return -(modulation * log_p).mean()


def cosine_similarity_matrix(v: Tensor, u: Tensor) -> Tensor:
    """sim(v_i, u_j) of eq. 3 for every pair: v (N, D), u (M, D) -> (N, M)."""
    return F.normalize(v.float(), dim=1) @ F.normalize(u.float(), dim=1).T  # N, M


def label_block_mean(sim: Tensor, labels: Tensor) -> Tensor:
    """Average an (N, N) matrix within each (label of i, label of j) block over the C' labels present -> (C', C').

    Blocks are ordered by ascending label, so the result does not depend on the order of the batch.
    """
    _, inverse = torch.unique(labels, sorted=True, return_inverse=True)  # N
    onehot = F.one_hot(inverse, num_classes=int(inverse.max()) + 1).to(sim.dtype)  # N, C'
    counts = onehot.sum(dim=0)  # C'
    block_sums = onehot.T @ sim @ onehot  # C', C'
    return block_sums / (counts[:, None] * counts[None, :])


def symmetric_cross_entropy(logits: Tensor) -> Tensor:
    """Mean of the row-wise and column-wise cross-entropies with positives on the diagonal (eq. 2)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def fsa_loss(v: Tensor, u: Tensor, labels: Tensor, *, temperature: float = 1.0, label_averaged: bool = True) -> Tensor:
    """FSA loss between features of the same N patients from two sequences: v (N, D), u (N, D), labels (N,).

    label_averaged=False: eq. 2, positives are the same patient (the diagonal of the N x N cosine matrix).
    label_averaged=True: the N x N matrix is averaged within label blocks first and eq. 2 is applied to the
    resulting C' x C' matrix (positives: same label). A batch with a single label (or a single patient) gives 0,
    still attached to the graph so that backward works.
    """
    if v.ndim != 2 or v.shape != u.shape or labels.shape != (v.shape[0],):
        shapes = f"{tuple(v.shape)}, {tuple(u.shape)}, {tuple(labels.shape)}"
        raise ValueError(f"fsa_loss expects v, u (N, D) and labels (N,), got {shapes}")
    sim = cosine_similarity_matrix(v, u) / temperature  # N, N
    if label_averaged:
        sim = label_block_mean(sim, labels)  # C', C'
    return symmetric_cross_entropy(sim)


class UncertaintyWeighting(nn.Module):
    """Eq. 4: `sum_k L_k / sigma_k**2 + log(sigma_k + 1)` with one learnable sigma per named term.

    Stored as `log_sigma` (initialised to 0, sigma = 1), so sigma stays positive without clamping.
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"UncertaintyWeighting needs distinct, non-empty names, got {list(names)}")
        self.names: tuple[str, ...] = tuple(names)
        self.log_sigma = nn.Parameter(torch.zeros(len(self.names)))

    def weights(self) -> Tensor:
        """1 / sigma_k**2 per term, in the order of `names`."""
        return torch.exp(-2.0 * self.log_sigma)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        stacked = _stack_terms(losses, self.names).to(self.log_sigma.dtype)  # K
        # log(sigma + 1) = log(exp(log_sigma) + 1) = softplus(log_sigma), stable for any log_sigma.
        return (stacked * self.weights()).sum() + F.softplus(self.log_sigma).sum()

    def sigmas(self) -> dict[str, float]:
        values = self.log_sigma.detach().exp().tolist()
        return dict(zip(self.names, values, strict=True))


class FixedWeighting(nn.Module):
    """The "FIM without U-A" ablation: the plain sum of the terms (every weight 1, no parameters)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"FixedWeighting needs distinct, non-empty names, got {list(names)}")
        self.names: tuple[str, ...] = tuple(names)

    def weights(self) -> Tensor:
        return torch.ones(len(self.names))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        return _stack_terms(losses, self.names).sum()

    def sigmas(self) -> dict[str, float]:
        return dict.fromkeys(self.names, 1.0)


def _stack_terms(losses: Mapping[str, Tensor], names: tuple[str, ...]) -> Tensor:
    """The scalar losses in the order of `names`; the keys must match the names exactly."""
    if set(losses) != set(names):
        raise KeyError(f"loss terms {sorted(losses)} do not match the weighted terms {sorted(names)}")
    return torch.stack([losses[name].reshape(()).float() for name in names])  # K
