"""The masked, sync-free FIM losses equal the former boolean-indexing computation, and never wait on the device.

The reference below is the code the model and losses used before (rows selected by `x[mask]`, classes found with
`torch.unique`, `int(mask.sum())` deciding whether a term is 0): each of those forces a GPU -> CPU sync per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cccmr_model.losses import focal_loss, fsa_loss, masked_focal_loss
from cccmr_model.model import FIM_TERMS, CCCMRModel, ModelOutput
from cccmr_model.sequences import LGE_SAX, SEQUENCE_PAIRS, SEQUENCES


def reference_fsa(v: Tensor, u: Tensor, labels: Tensor, temperature: float, label_averaged: bool) -> Tensor:
    """The former `fsa_loss`: N x N cosine logits, optionally cut down to the C' x C' block means of present labels."""
    sim = F.normalize(v.float(), dim=1) @ F.normalize(u.float(), dim=1).T / temperature  # N, N
    if label_averaged:
        _, inverse = torch.unique(labels, sorted=True, return_inverse=True)  # N
        onehot = F.one_hot(inverse, num_classes=int(inverse.max()) + 1).to(sim.dtype)  # N, C'
        counts = onehot.sum(dim=0)  # C'
        sim = onehot.T @ sim @ onehot / (counts[:, None] * counts[None, :])  # C', C'
    target = torch.arange(sim.shape[0], device=sim.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def reference_fim_losses(
    output: ModelOutput, labels: Tensor, has_lge: Tensor, gamma: float, temperature: float, label_averaged: bool
) -> dict[str, Tensor]:
    """The former `CCCMRModel.fim_losses`: LGE terms over `x[has_lge]`, 0 below 1 (CLS) or 2 (FSA) LGE subjects."""
    losses = {}
    for seq in SEQUENCES:
        rows = has_lge if seq == LGE_SAX else torch.ones_like(has_lge)
        if int(rows.sum()) < 1:
            losses[f"cls:{seq}"] = torch.zeros(())
        else:
            losses[f"cls:{seq}"] = focal_loss(output.logits[seq][rows], labels[rows], gamma=gamma)
    for a, b in SEQUENCE_PAIRS:
        rows = has_lge if LGE_SAX in (a, b) else torch.ones_like(has_lge)
        if int(rows.sum()) < 2:
            losses[f"fsa:{a}|{b}"] = torch.zeros(())
        else:
            v, u = output.features[a][rows], output.features[b][rows]
            losses[f"fsa:{a}|{b}"] = reference_fsa(v, u, labels[rows], temperature, label_averaged)
    return losses


def random_case(seed: int, n: int, num_classes: int, lge: str, one_class: bool = False):
    """Features, labels and an LGE mask: lge in "all", "gaps", "one", "none"."""
    generator = torch.Generator().manual_seed(seed)
    v, u = torch.randn(n, 8, generator=generator), torch.randn(n, 8, generator=generator)
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    if one_class:
        labels = torch.full((n,), num_classes - 1)
    mask = {
        "all": torch.ones(n, dtype=torch.bool),
        "gaps": torch.rand(n, generator=generator) < 0.6,
        "one": torch.arange(n) == n // 2,
        "none": torch.zeros(n, dtype=torch.bool),
    }[lge]
    return v, u, labels, mask


CASES = [
    (seed, n, c, lge, one_class)
    for seed, (n, c) in enumerate([(6, 2), (9, 2), (7, 5), (12, 5), (16, 5)])
    for lge in ("all", "gaps", "one", "none")
    for one_class in (False, True)
]


@pytest.mark.parametrize("label_averaged", [True, False])
@pytest.mark.parametrize(("seed", "n", "num_classes", "lge", "one_class"), CASES)
def test_masked_fsa_equals_boolean_indexing_in_value_and_gradient(
    seed: int, n: int, num_classes: int, lge: str, one_class: bool, label_averaged: bool
) -> None:
    v, u, labels, mask = random_case(seed, n, num_classes, lge, one_class)
    v_new, u_new = v.clone().requires_grad_(), u.clone().requires_grad_()
    loss = fsa_loss(v_new, u_new, labels, temperature=0.3, label_averaged=label_averaged,
                    num_classes=num_classes, weights=mask)  # fmt: skip
    loss.backward()
    assert loss.requires_grad and torch.isfinite(loss)
    v_old, u_old = v.clone().requires_grad_(), u.clone().requires_grad_()
    if int(mask.sum()) < 2:
        assert loss.item() == 0.0
        assert torch.equal(v_new.grad, torch.zeros_like(v)) and torch.equal(u_new.grad, torch.zeros_like(u))
        return
    expected = reference_fsa(v_old[mask], u_old[mask], labels[mask], 0.3, label_averaged)
    expected.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v_new.grad, v_old.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(u_new.grad, u_old.grad, rtol=1e-4, atol=1e-6)
    if one_class and label_averaged:
        assert loss.item() == 0.0


@pytest.mark.parametrize("label_averaged", [True, False])
def test_fsa_without_num_classes_or_weights_matches_the_reference(label_averaged: bool) -> None:
    v, u, _, _ = random_case(3, 10, 5, "all")
    labels = torch.tensor([7, -1, 3, 3, 7, 7, -1, 3, 7, 3])  # arbitrary label values still work without C
    expected = reference_fsa(v, u, labels, 0.5, label_averaged)
    torch.testing.assert_close(fsa_loss(v, u, labels, temperature=0.5, label_averaged=label_averaged), expected)


@pytest.mark.parametrize(("seed", "n", "num_classes", "lge", "one_class"), CASES)
def test_masked_focal_equals_boolean_indexing(seed: int, n: int, num_classes: int, lge: str, one_class: bool) -> None:
    _, _, labels, mask = random_case(seed, n, num_classes, lge, one_class)
    logits = torch.randn(n, num_classes, generator=torch.Generator().manual_seed(seed)) * 3
    new_logits, old_logits = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = masked_focal_loss(new_logits, labels, mask, gamma=2.0)
    loss.backward()
    if not mask.any():
        assert loss.item() == 0.0 and torch.equal(new_logits.grad, torch.zeros_like(logits))
        return
    expected = focal_loss(old_logits[mask], labels[mask], gamma=2.0)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(new_logits.grad, old_logits.grad)


def test_focal_reduction_none_gives_the_per_sample_terms() -> None:
    generator = torch.Generator().manual_seed(4)
    logits, target = torch.randn(5, 3, generator=generator), torch.randint(0, 3, (5,), generator=generator)
    per_sample = focal_loss(logits, target, gamma=2.0, reduction="none")
    rows = torch.stack([focal_loss(logits[i : i + 1], target[i : i + 1], gamma=2.0) for i in range(5)])
    torch.testing.assert_close(per_sample, rows)
    torch.testing.assert_close(per_sample.mean(), focal_loss(logits, target, gamma=2.0))
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, target, reduction="sum")


def fim_model(num_classes: int, label_averaged: bool = True) -> CCCMRModel:
    """A CCCMRModel whose encoders are never run: `fim_losses` only reads the given ModelOutput."""
    encoders = {seq: nn.Identity() for seq in SEQUENCES}
    return CCCMRModel(encoders, num_features=8, num_classes=num_classes, fsa_temperature=0.7,
                      fsa_label_averaged=label_averaged)  # fmt: skip


def fim_output(seed: int, n: int, num_classes: int, device: str | torch.device = "cpu") -> ModelOutput:
    generator = torch.Generator().manual_seed(seed)
    features = {seq: torch.randn(n, 8, generator=generator).to(device) for seq in SEQUENCES}
    logits = {seq: torch.randn(n, num_classes, generator=generator).to(device) for seq in SEQUENCES}
    return ModelOutput(features=features, logits=logits)


@pytest.mark.parametrize("label_averaged", [True, False])
@pytest.mark.parametrize(("seed", "n", "num_classes", "lge", "one_class"), CASES)
def test_fim_losses_equal_the_former_boolean_indexing(
    seed: int, n: int, num_classes: int, lge: str, one_class: bool, label_averaged: bool
) -> None:
    _, _, labels, mask = random_case(seed, n, num_classes, lge, one_class)
    model = fim_model(num_classes, label_averaged)
    output = fim_output(seed, n, num_classes)
    losses = model.fim_losses(output, labels, mask)
    expected = reference_fim_losses(output, labels, mask, 2.0, 0.7, label_averaged)
    assert tuple(losses) == FIM_TERMS
    for name in FIM_TERMS:
        torch.testing.assert_close(losses[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@contextlib.contextmanager
def host_reads_forbidden() -> Iterator[None]:
    """Any Python-level read of a tensor's value, or a data-dependent shape (boolean indexing), raises."""

    def refuse(name: str):
        def raiser(*args, **kwargs):
            raise AssertionError(f"host sync: Tensor.{name} called during the loss")

        return raiser

    names = ["__bool__", "__int__", "__float__", "__index__", "item", "tolist", "numpy", "nonzero"]
    saved = {name: getattr(torch.Tensor, name) for name in names}
    getitem = torch.Tensor.__getitem__
    saved_unique = torch.unique

    def checked_getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts):
            raise AssertionError("host sync: boolean-mask indexing during the loss")
        return getitem(self, index)

    try:
        for name in names:
            setattr(torch.Tensor, name, refuse(name))
        torch.Tensor.__getitem__ = checked_getitem
        torch.unique = refuse("unique")
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)
        torch.Tensor.__getitem__ = getitem
        torch.unique = saved_unique


@pytest.mark.parametrize("label_averaged", [True, False])
def test_fim_losses_and_backward_read_nothing_back_from_the_device(label_averaged: bool) -> None:
    model = fim_model(5, label_averaged)
    output = fim_output(0, 8, 5)
    for tensor in [*output.features.values(), *output.logits.values()]:
        tensor.requires_grad_()
    labels, mask = torch.tensor([0, 1, 4, 4, 2, 0, 1, 3]), torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    expected = reference_fim_losses(output, labels, mask, 2.0, 0.7, label_averaged)
    with host_reads_forbidden():
        losses = model.fim_losses(output, labels, mask)
        model.fim_total(losses).backward()
    for name in FIM_TERMS:
        torch.testing.assert_close(losses[name].detach(), expected[name].detach(), rtol=1e-5, atol=1e-6)
    with host_reads_forbidden(), pytest.raises(AssertionError, match="host sync"):  # the guard itself works
        reference_fim_losses(output, labels, mask, 2.0, 0.7, label_averaged)


@pytest.mark.parametrize("label_averaged", [True, False])
def test_fim_losses_run_on_the_meta_device(label_averaged: bool) -> None:
    """Meta tensors hold no data: any value-dependent op (sync) would fail, so the whole term runs shape-only."""
    model = fim_model(5, label_averaged).to("meta")
    output = fim_output(1, 6, 5, device="meta")
    for tensor in output.features.values():
        tensor.requires_grad_()
    labels = torch.zeros(6, dtype=torch.long, device="meta")
    has_lge = torch.zeros(6, dtype=torch.bool, device="meta")
    losses = model.fim_losses(output, labels, has_lge)
    model.fim_total(losses).backward()
    assert all(value.shape == () and value.device.type == "meta" for value in losses.values())
    with pytest.raises((NotImplementedError, RuntimeError)):  # the former int(mask.sum()) cannot run there
        reference_fim_losses(output, labels, has_lge, 2.0, 0.7, label_averaged)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("label_averaged", [True, False])
def test_fim_losses_do_not_synchronise_on_cuda(label_averaged: bool) -> None:
    model = fim_model(5, label_averaged).cuda()
    output = fim_output(2, 16, 5, device="cuda")
    for tensor in output.features.values():
        tensor.requires_grad_()
    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 5, (16,), generator=generator).cuda()
    has_lge = (torch.rand(16, generator=generator) < 0.5).cuda()
    model.fim_total(model.fim_losses(output, labels, has_lge)).backward()  # warm-up (kernels, allocator)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = model.fim_losses(output, labels, has_lge)
        model.fim_total(losses).backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    expected = reference_fim_losses(output, labels, has_lge, 2.0, 0.7, label_averaged)
    for name in FIM_TERMS:
        torch.testing.assert_close(losses[name].detach().cpu(), expected[name].detach().cpu(), rtol=1e-4, atol=1e-5)
