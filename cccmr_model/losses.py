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


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, *, reduction: str = "mean") -> Tensor:
    """Mean over the batch of `-(1 - p_i)**gamma * log(p_i)`, `p_i` the softmax probability of the true class.

    logits (N, C) for any C >= 2, target (N,) integer class indices. Computed from log-softmax, so it stays finite
    for confidently wrong logits; gamma 0 gives the plain cross-entropy. `reduction="none"` returns the per-sample
    terms (N,) instead of their mean (DP-SGD, masked means).
    """
    if logits.ndim != 2 or target.ndim != 1 or logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"focal_loss expects logits (N, C) and target (N,), got {tuple(logits.shape)}, {tuple(target.shape)}"
        )
    if reduction not in ("mean", "none"):
        raise ValueError(f"focal_loss reduction must be 'mean' or 'none', got {reduction!r}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)  # N
    modulation = (1.0 - log_p.exp()).clamp(min=0.0).pow(gamma)  # N
    per_sample = -(modulation * log_p)  # N
    return per_sample.mean() if reduction == "mean" else per_sample


def masked_focal_loss(logits: Tensor, target: Tensor, mask: Tensor, gamma: float = 2.0) -> Tensor:
    """`focal_loss` over the rows where `mask` (N,) is true, without a host sync: 0 when no row is selected.

    Equal to `focal_loss(logits[mask], target[mask])`, but the shapes never depend on the mask's values.
    """
    per_sample = focal_loss(logits, target, gamma, reduction="none")  # N
    weights = mask.to(per_sample.dtype)  # N
    total = torch.where(mask.bool(), per_sample, torch.zeros_like(per_sample)).sum()
    return total / weights.sum().clamp(min=1.0)


def cosine_similarity_matrix(v: Tensor, u: Tensor) -> Tensor:
    """sim(v_i, u_j) of eq. 3 for every pair: v (N, D), u (M, D) -> (N, M)."""
    return F.normalize(v.float(), dim=1) @ F.normalize(u.float(), dim=1).T  # N, M


def class_block_mean(
    sim: Tensor, labels: Tensor, num_classes: int, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Block means of an (N, N) matrix over a fixed set of C classes, without a host sync.

    Rows (and columns) with weight 0 are left out. Returns the (C, C) block means (0 for a class absent from the
    kept rows) and the (C,) bool mask of the classes present. Labels outside [0, C) fall in no block.
    """
    classes = torch.arange(num_classes, device=labels.device)  # C
    onehot = (labels[:, None] == classes[None, :]).to(sim.dtype)  # N, C
    if weights is not None:
        onehot = onehot * weights.to(sim.dtype)[:, None]  # N, C: rows left out have no class
    counts = onehot.sum(dim=0)  # C
    block_sums = onehot.T @ sim @ onehot  # C, C
    sizes = (counts[:, None] * counts[None, :]).clamp(min=1.0)  # C, C (absent blocks: sum 0 / 1)
    return block_sums / sizes, counts > 0


def symmetric_cross_entropy(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean of the row-wise and column-wise cross-entropies with positives on the diagonal (eq. 2).

    With `valid` (K,) bool, only the valid rows and columns take part (as if the matrix were cut down to them):
    invalid columns get -inf logits, invalid rows weight 0, means over the valid rows. No host sync; no valid row
    gives 0 and a single valid row gives exactly 0 (a one-way softmax), both still attached to the graph.
    """
    if valid is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    count = valid.to(logits.dtype).sum().clamp(min=1.0)
    row_loss = _diagonal_nll(logits, valid).sum() / count
    col_loss = _diagonal_nll(logits.T, valid).sum() / count
    return (row_loss + col_loss) / 2


def _diagonal_nll(logits: Tensor, valid: Tensor) -> Tensor:
    """Per row, -log softmax of the diagonal entry over the valid columns; 0 for invalid rows. (K, K) -> (K,)."""
    masked = logits.masked_fill(~valid[None, :], float("-inf"))  # K, K: invalid columns drop out of the softmax
    masked = torch.where(valid[:, None], masked, torch.zeros_like(masked))  # invalid rows stay finite (no NaN)
    nll = -F.log_softmax(masked, dim=1).diagonal()  # K
    return torch.where(valid, nll, torch.zeros_like(nll))


def fsa_loss(
    v: Tensor,
    u: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    label_averaged: bool = True,
    num_classes: int | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """FSA loss between features of the same N patients from two sequences: v (N, D), u (N, D), labels (N,).

    label_averaged=False: eq. 2, positives are the same patient (the diagonal of the N x N cosine matrix).
    label_averaged=True: the N x N matrix is averaged within label blocks first and eq. 2 is applied to the
    resulting C' x C' matrix of the classes present (positives: same label). A batch with a single label (or a
    single patient) gives 0, still attached to the graph so that backward works.

    `weights` (N,) 0/1 leaves rows out (as if they were not in the batch): subjects without LGE in an LGE term.
    `num_classes` (labels in [0, C)) makes the label-averaged loss free of host syncs: the C x C blocks of absent
    classes are masked out instead of being found with `torch.unique`. Without it the classes are found from the
    labels (one sync), which also accepts arbitrary label values.
    """
    if v.ndim != 2 or v.shape != u.shape or labels.shape != (v.shape[0],):
        shapes = f"{tuple(v.shape)}, {tuple(u.shape)}, {tuple(labels.shape)}"
        raise ValueError(f"fsa_loss expects v, u (N, D) and labels (N,), got {shapes}")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(f"fsa_loss weights must be (N,) = {tuple(labels.shape)}, got {tuple(weights.shape)}")
    sim = cosine_similarity_matrix(v, u) / temperature  # N, N
    if not label_averaged:
        if weights is None:
            return symmetric_cross_entropy(sim)
        return symmetric_cross_entropy(sim, weights > 0)
    if num_classes is None:  # arbitrary label values: rank them (host sync)
        _, labels = torch.unique(labels, sorted=True, return_inverse=True)  # N
        num_classes = int(labels.max()) + 1 if labels.numel() else 1
    blocks, present = class_block_mean(sim, labels, num_classes, weights)  # C, C and C
    return symmetric_cross_entropy(blocks, present)


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
