"""Window attention with a relative position bias as one autograd Function, for training on the CPU.

Autograd's matmul + softmax attention writes and reads several (windows x heads x N x N) tensors per block
(scores, bias sum, probabilities, their gradients, the bias gradient summed over the batch), each far larger than
the CPU caches at video window sizes (N = 8 * 7 * 7 = 392). `WindowAttentionFunction` instead runs one window
at a time, so a window's scores stay in cache between the GEMM that writes them, the mask, the softmax and the
GEMM that reads them:

* forward: S = bias + scale * q k^T in one `baddbmm` (the bias is the GEMM's input, added as its output is
  written), + mask of that window, softmax in place, O = P v written straight into the (tokens, heads x dim)
  layout the output projection takes; only q, k, v (as the qkv projection's output) and P are kept;
* backward: dv = P^T dO, dP = dO v^T, dS = softmax backward (one fused pass, in place), dq = scale dS k,
  dk = scale dS^T q written into the qkv gradient; the bias gradient is dS summed over windows in cache and
  scattered into the table once with `index_add_`.

q, k, v are strided views of the qkv projection's output ((B*nW, N, 3, nH, hd)); `bmm` takes them without a
copy. Results equal the explicit form up to float rounding. Not used under functorch transforms (opacus
per-sample gradients), tracing, export or compilation, nor with attention dropout: those take the plain path.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = [
    "TokenPermutation",
    "WindowAttentionFunction",
    "fused_attention_applies",
    "masked_windows",
    "permute_tokens",
    "window_attention_fused",
]


def _eager_autograd() -> bool:
    """Autograd is recording in plain eager mode (no functorch transform, tracing, export or compilation)."""
    return (
        torch.is_grad_enabled()
        and not torch._C._are_functorch_transforms_active()  # opacus per-sample gradients (vmap over the module)
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


def fused_attention_applies(qkv: torch.Tensor, table: torch.Tensor, dropout_p: float) -> bool:
    """Whether the fused CPU training path can run: CPU, autograd recording a trainable table, plain eager mode."""
    return (
        qkv.device.type == "cpu"
        and dropout_p == 0.0
        and table.requires_grad
        and qkv.dtype in (torch.float32, torch.float64)
        and table.dtype == qkv.dtype
        and _eager_autograd()
    )


class TokenPermutation(torch.autograd.Function):
    """x[:, perm] for a permutation `perm` of dim 1; the gradient is the inverse gather (no zero fill + scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(inverse)
        return x.index_select(1, perm)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def permute_tokens(x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """(B, L, C) -> x[:, perm] (one gather); `inverse` is the inverse permutation, used by the backward pass."""
    if _eager_autograd() and x.requires_grad:
        return TokenPermutation.apply(x, perm, inverse)
    return x.index_select(1, perm)  # inference, export, compilation, functorch: plain op


CHUNK_BYTES = 2 << 20  # scores of one (window, heads) chunk at most: recycled by the allocator, within L2 + L3


class WindowAttentionFunction(torch.autograd.Function):
    """softmax(scale q k^T + table[index] + mask) v per window and head; see the module docstring."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        qkv: torch.Tensor,
        table: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor | None,
        masked: tuple[bool, ...] | None,
        num_heads: int,
        scale: float,
    ) -> torch.Tensor:
        BnW, N, C3 = qkv.shape
        nH, hd = num_heads, C3 // 3 // num_heads
        qkv = qkv.contiguous()
        q, k, v = _heads(qkv, nH)  # B*nW, nH, N, hd each (strided views)
        bias = table.t().contiguous().index_select(1, index).view(nH, N, N)  # gathered per head row
        out = qkv.new_empty(BnW, N, nH, hd)
        hc = _heads_per_chunk(nH, N, qkv.element_size())
        chunks = [(w, h) for w in range(BnW) for h in range(0, nH, hc)]  # (window, first head)
        if masked is None:
            masked = masked_windows(mask)
        biases = bias.split(hc)
        views = zip(*(_pieces(t, hc) for t in (q, k.transpose(-2, -1), v, out.transpose(1, 2))), strict=True)
        probs = []  # one buffer per chunk: small enough to be recycled by the allocator (no fresh page faults)
        for (w, h), (qc, ktc, vc, oc) in zip(chunks, views, strict=True):
            p = torch.baddbmm(biases[h // hc], qc, ktc, alpha=scale)  # hc, N, N: bias added in the GEMM
            if masked[w % len(masked)]:  # windows are ordered (clip, window): mask of window w % nW
                p.add_(mask[w % len(masked)])  # type: ignore[index]
            torch.ops.aten._softmax.out(p, -1, False, out=p)
            torch.bmm(p, vc, out=oc)
            probs.append(p)
        ctx.save_for_backward(qkv, index, *probs)
        ctx.meta = (nH, hc, scale, table.shape, chunks)
        return out.view(BnW, N, C3 // 3)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        qkv, index, *probs = ctx.saved_tensors
        nH, hc, scale, table_shape, chunks = ctx.meta
        BnW, N, _ = qkv.shape
        q, k, v = _heads(qkv, nH)
        dqkv = torch.empty_like(qkv)
        dq, dk, dv = _heads(dqkv, nH)
        grads = grad_out.contiguous().view(BnW, N, nH, -1).transpose(1, 2)  # B*nW, nH, N, hd
        views = zip(*(_pieces(t, hc) for t in (q, k, v.transpose(-2, -1), grads, dq, dk, dv)), strict=True)
        dbias: dict[int, torch.Tensor] = {}  # bias gradient per head slice, summed over windows
        scratch = torch.empty_like(probs[0])
        for (_, h), p, (qc, kc, vtc, do, dqc, dkc, dvc) in zip(chunks, probs, views, strict=True):
            ds = scratch[: p.shape[0]]  # hc, N, N
            torch.bmm(do, vtc, out=ds)  # dP
            torch.ops.aten._softmax_backward_data.out(ds, p, -1, ds.dtype, grad_input=ds)  # dS, in place
            torch.bmm(p.transpose(1, 2), do, out=dvc)
            if h in dbias:
                dbias[h].add_(ds)
            else:
                dbias[h] = ds.clone()
            torch.baddbmm(dqc, ds, kc, beta=0.0, alpha=scale, out=dqc)
            torch.baddbmm(dkc, ds.transpose(1, 2), qc, beta=0.0, alpha=scale, out=dkc)
        dtable = qkv.new_zeros(table_shape[1], table_shape[0])  # nH, R
        for start, grad in dbias.items():
            dtable[start : start + grad.shape[0]].index_add_(1, index, grad.view(grad.shape[0], N * N))
        return dqkv, dtable.t(), None, None, None, None, None


def _heads(qkv: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B*nW, N, 3C) -> q, k, v as (B*nW, nH, N, hd) strided views (no copy)."""
    BnW, N, C3 = qkv.shape
    q, k, v = qkv.view(BnW, N, 3, num_heads, C3 // 3 // num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _heads_per_chunk(num_heads: int, num_tokens: int, itemsize: int) -> int:
    """Heads per (window, heads) chunk whose scores fill at most `CHUNK_BYTES` (at least one head)."""
    return max(1, min(num_heads, CHUNK_BYTES // (num_tokens * num_tokens * itemsize)))


def _pieces(t: torch.Tensor, heads_per_chunk: int) -> list[torch.Tensor]:
    """(B*nW, nH, ...) -> views (hc, ...) in chunk order (window-major), without per-chunk indexing in Python."""
    windows = t.unbind(0)
    if heads_per_chunk >= t.shape[1]:
        return list(windows)
    return [piece for window in windows for piece in window.split(heads_per_chunk)]


def masked_windows(mask: torch.Tensor | None) -> tuple[bool, ...]:
    """Per window of an additive mask (nW, N, N), whether it masks anything (most shifted windows do not)."""
    if mask is None:
        return (False,)
    return tuple(mask.flatten(1).ne(0).any(1).tolist())


def window_attention_fused(
    qkv: torch.Tensor,
    table: torch.Tensor,
    index: torch.Tensor,
    mask: torch.Tensor | None,
    num_heads: int,
    scale: float,
    masked: tuple[bool, ...] | None = None,
) -> torch.Tensor:
    """qkv (B*nW, N, 3C), table (R, nH), index (N*N,) into the table, additive mask (nW, N, N) or None
    -> (B*nW, N, C). `masked`: `masked_windows(mask)`, when the caller has it cached."""
    return WindowAttentionFunction.apply(qkv, table, index, mask, masked, num_heads, scale)
