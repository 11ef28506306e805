"""Video Swin Transformer (3D shifted-window attention) on timm layers.

A PyTorch implementation of:
* `Video Swin Transformer` - Liu et al., CVPR 2022, https://arxiv.org/abs/2106.13230

Architecture follows the official SwinTransformer/Video-Swin-Transformer (Apache-2.0) and torchvision's
`torchvision.models.video.swin3d_*` exactly (same padding, window shrinking for short clips, -100 shift mask,
patch merging order), so their weights load and give the same features. The module layout follows timm's 2D
`swin_transformer.py`; parameter names follow the official repository (`layers.{i}.blocks.{j}...`,
`layers.{i}.downsample` at the end of stage i).

Differences from the references, none of which changes a result beyond float rounding:
* training on the CPU runs window attention through `swin3d_attention.WindowAttentionFunction`: one window at a
  time so its scores stay in cache, the bias added inside the score GEMM, softmax in place, a hand-written
  backward, the bias-table gradient scattered once per block (1.3-2.4x faster attention than matmul + softmax
  through autograd); under opacus/functorch, tracing, export, compilation or attention dropout the plain path
  (matmul + softmax) runs instead;
* inference and CUDA run `F.scaled_dot_product_attention` with one additive bias (relative position bias plus
  shift mask, combined once per block and forward) instead of matmul + softmax with two additions;
* the shift mask (and which of its windows mask anything) is built once per stage input shape and device and
  cached, not rebuilt in every block;
* when the map is a whole number of windows, the cyclic shift + window partition (and their inverse) is one
  cached token permutation, applied as one gather each way;
* no buffers at all: the relative position index and the mask are derived from shapes and cached outside the
  state dict, so a state dict holds parameters only and opacus accepts the attention module (a module with both
  trainable parameters and buffers is refused by opacus).

Weight loading and 2D->3D inflation live in `swin3d_weights.py`; `load_pretrained` is re-exported here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from cccmr_model.swin3d_attention import (
    fused_attention_applies,
    masked_windows,
    permute_tokens,
    window_attention_fused,
)

__all__ = [
    "LoadReport",
    "SwinTransformer3d",
    "WeightsError",
    "load_pretrained",
    "swin3d_base",
    "swin3d_small",
    "swin3d_tiny",
]

Size3 = tuple[int, int, int]


def _to_3tuple(value: int | Sequence[int], name: str) -> Size3:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name} must have 3 entries (T, H, W), got {value}")
    return value  # type: ignore[return-value]


def window_and_shift(size_dhw: Size3, window_size: Size3, shift_size: Size3) -> tuple[Size3, Size3]:
    """Shrink windows larger than the input to the input, with no shift there (torchvision/official rule)."""
    window = tuple(s if s <= w else w for s, w in zip(size_dhw, window_size, strict=True))
    shift = tuple(0 if s <= w else sh for s, w, sh in zip(size_dhw, window_size, shift_size, strict=True))
    return window, shift  # type: ignore[return-value]


def _pad_amounts(size_dhw: Size3, multiple: Size3) -> Size3:
    return tuple((m - s % m) % m for s, m in zip(size_dhw, multiple, strict=True))  # type: ignore[return-value]


def window_partition(x: torch.Tensor, window_size: Size3) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * nW, Wd * Wh * Ww, C); D, H, W must be multiples of the window."""
    B, D, H, W, C = x.shape
    wd, wh, ww = window_size
    x = x.view(B, D // wd, wd, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, C)  # B*nW, N, C


def window_reverse(windows: torch.Tensor, window_size: Size3, B: int, D: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, Wd * Wh * Ww, C) -> (B, D, H, W, C)."""
    wd, wh, ww = window_size
    x = windows.view(B, D // wd, H // wh, W // ww, wd, wh, ww, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(B, D, H, W, -1)  # B, D, H, W, C


@functools.lru_cache(maxsize=32)
def relative_position_index(window_size: Size3, device: torch.device) -> torch.Tensor:
    """Index into the (2Wd-1)(2Wh-1)(2Ww-1) bias table for each token pair of a window: (N, N) int64."""
    with torch.inference_mode(False), torch.no_grad():  # a cached inference tensor would break autograd later
        coords = torch.stack(torch.meshgrid(*[torch.arange(w, device=device) for w in window_size], indexing="ij"))
        coords = coords.flatten(1)  # 3, N
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 3
        wd, wh, ww = window_size
        rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1], device=device)
        return rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]  # N, N


@functools.lru_cache(maxsize=32)
def flat_relative_position_index(window_size: Size3, num_tokens: int, device: torch.device) -> torch.Tensor:
    """`relative_position_index` cropped to windows of `num_tokens` tokens and flattened: (N * N,) int64."""
    with torch.inference_mode(False), torch.no_grad():
        return relative_position_index(window_size, device)[:num_tokens, :num_tokens].reshape(-1).contiguous()


@functools.lru_cache(maxsize=64)
def shift_mask(padded_dhw: Size3, window_size: Size3, shift_size: Size3, device: torch.device) -> torch.Tensor:
    """Additive mask (nW, N, N): 0 within a region of the cyclically shifted map, -100 across regions."""
    with torch.inference_mode(False), torch.no_grad():
        region = torch.zeros(1, *padded_dhw, 1, device=device)
        count = 0
        slices = [((0, -w), (-w, -s), (-s, None)) for w, s in zip(window_size, shift_size, strict=True)]
        for d in slices[0]:
            for h in slices[1]:
                for w in slices[2]:
                    region[:, d[0] : d[1], h[0] : h[1], w[0] : w[1]] = count
                    count += 1
        region = window_partition(region, window_size).squeeze(-1)  # nW, N
        diff = region[:, None, :] - region[:, :, None]  # nW, N, N
        return torch.where(diff != 0, -100.0, 0.0)


@functools.lru_cache(maxsize=64)
def shift_mask_windows(
    padded_dhw: Size3, window_size: Size3, shift_size: Size3, device: torch.device
) -> tuple[bool, ...]:
    """Per window of `shift_mask`, whether it masks anything (windows inside one region need no mask)."""
    return masked_windows(shift_mask(padded_dhw, window_size, shift_size, device))


@functools.lru_cache(maxsize=64)
def window_order(
    size_dhw: Size3, window_size: Size3, shift_size: Size3, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token order of the (shifted) windows, for a map that is a whole number of windows: (perm, inverse).

    For tokens (B, D*H*W, C), `tokens[:, perm]` equals `window_partition(roll(map, -shift))` flattened, and
    `windows[:, inverse]` undoes it: one gather each way instead of a roll and a partition copy.
    """
    with torch.inference_mode(False), torch.no_grad():
        order = torch.arange(size_dhw[0] * size_dhw[1] * size_dhw[2], device=device).view(1, *size_dhw, 1)
        if any(shift_size):
            order = torch.roll(order, shifts=tuple(-s for s in shift_size), dims=(1, 2, 3))
        perm = window_partition(order, window_size).reshape(-1)  # L
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=device)
        return perm, inverse


def _explicit_attention(q: torch.Tensor, bias: torch.Tensor, dropout_p: float) -> bool:
    """Whether to run attention as matmul + softmax instead of `F.scaled_dot_product_attention`.

    On the CPU, SDPA's fused (flash) kernel cannot return a gradient for the additive bias, so with a trainable
    bias it falls back to an unfused path that is no faster than matmul + softmax and needs more memory (it
    copies the bias for every clip and adds safe-softmax passes). There the explicit form, which broadcasts the
    bias over the batch in place, is used when the fused `WindowAttentionFunction` does not apply (opacus
    per-sample gradients, tracing, export, compilation); everywhere else (inference, CUDA, whose
    memory-efficient kernel returns bias gradients) SDPA runs.
    """
    return q.device.type == "cpu" and bias.requires_grad and torch.is_grad_enabled() and dropout_p == 0.0


class WindowAttention3d(nn.Module):
    """Multi-head self attention inside (shifted) 3D windows with a learned relative position bias.

    Takes and returns the token map (B, D, H, W, C), so per-sample gradient tools (opacus) see the batch first.
    Owns `relative_position_bias_table` and registers no buffer; pads to whole windows, shrinks windows larger
    than the input and drops their shift, as the references do (shrunk windows index the top-left block of the
    full-size relative position index, exactly like torchvision and the official code).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Size3,
        shift_size: Size3 = (0, 0, 0),
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        wd, wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.fused_cpu_attention = True  # CPU training through `WindowAttentionFunction` (see swin3d_attention)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self, num_tokens: int) -> torch.Tensor:
        """(nH, N, N) bias for windows of `num_tokens` tokens."""
        index = relative_position_index(self.window_size, self.relative_position_bias_table.device)
        index = index[:num_tokens, :num_tokens].reshape(-1)
        bias = self.relative_position_bias_table[index].view(num_tokens, num_tokens, -1)  # N, N, nH
        return bias.permute(2, 0, 1)  # nH, N, N

    def window_attention(
        self, x: torch.Tensor, mask: torch.Tensor | None, masked: tuple[bool, ...] | None = None
    ) -> torch.Tensor:
        """x: (B * nW, N, C) windows; mask: additive (nW, N, N) shift mask or None; masked: its non-zero windows."""
        BnW, N, C = x.shape
        nH, hd = self.num_heads, C // self.num_heads
        dropout_p = self.attn_drop if self.training else 0.0
        table = self.relative_position_bias_table
        if self.fused_cpu_attention and fused_attention_applies(x, table, dropout_p):
            index = flat_relative_position_index(self.window_size, N, x.device)
            mask = None if mask is None else mask.to(x.dtype)
            x = window_attention_fused(self.qkv(x), table, index, mask, nH, hd**-0.5, masked)  # B*nW, N, C
            return self.proj_drop(self.proj(x))
        qkv = self.qkv(x).view(BnW, N, 3, nH, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B*nW, nH, N, hd
        bias = self.relative_position_bias(N).unsqueeze(0)  # 1, nH, N, N
        nW = 1
        if mask is not None:
            nW = mask.shape[0]
            bias = bias + mask.unsqueeze(1)  # nW, nH, N, N: bias and mask combined once per block
        if _explicit_attention(q, bias, dropout_p):
            attn = (q * hd**-0.5).view(BnW // nW, nW, nH, N, hd) @ k.view(BnW // nW, nW, nH, N, hd).transpose(-2, -1)
            attn = attn.add_(bias).softmax(-1)  # B, nW, nH, N, N (bias broadcast over the batch, never copied)
            x = attn.view(BnW, nH, N, N) @ v  # B*nW, nH, N, hd
        else:
            if nW != BnW:  # B*nW, nH, N, N
                bias = bias.unsqueeze(0).expand(BnW // nW, -1, -1, -1, -1).reshape(BnW, nH, N, N)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p)
        x = x.transpose(1, 2).reshape(BnW, N, C)
        return self.proj_drop(self.proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W, C) -> same shape."""
        B, D, H, W, _ = x.shape
        window, shift = window_and_shift((D, H, W), self.window_size, self.shift_size)
        pd, ph, pw = _pad_amounts((D, H, W), window)
        if pd or ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
        Dp, Hp, Wp = D + pd, H + ph, W + pw
        shifted = any(shift)
        mask = masked = None
        if shifted:
            mask = shift_mask((Dp, Hp, Wp), window, shift, x.device)
            masked = shift_mask_windows((Dp, Hp, Wp), window, shift, x.device)
        if not (pd or ph or pw):  # roll + partition and their inverses as one gather each
            C, N = x.shape[-1], window[0] * window[1] * window[2]
            if not shifted and window == (D, H, W):  # one window per clip: tokens already are in window order
                return self.window_attention(x.reshape(B, N, C), None).view(B, D, H, W, C)
            perm, inverse = window_order((D, H, W), window, shift, x.device)
            x = permute_tokens(x.reshape(B, D * H * W, C), perm, inverse).view(-1, N, C)  # B*nW, N, C
            x = self.window_attention(x, mask, masked)  # B*nW, N, C
            return permute_tokens(x.view(B, D * H * W, C), inverse, perm).view(B, D, H, W, C)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        x = self.window_attention(window_partition(x, window), mask, masked)  # B*nW, N, C
        x = window_reverse(x, window, B, Dp, Hp, Wp)  # B, Dp, Hp, Wp, C
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        if pd or ph or pw:
            x = x[:, :D, :H, :W, :]
        return x


class SwinTransformerBlock3d(nn.Module):
    """Pre-norm (shifted) window attention and MLP, each with a residual and stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Size3,
        shift_size: Size3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention3d(dim, num_heads, window_size, shift_size, qkv_bias, attn_drop, proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W, C) -> same shape."""
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class PatchMerging3d(nn.Module):
    """Merge 2x2 in-plane neighbours (time untouched): (B, D, H, W, C) -> (B, D, H/2, W/2, 2C)."""

    def __init__(self, dim: int, norm_layer: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, D, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        # channel order (h0 w0, h1 w0, h0 w1, h1 w1) as the official x0..x3 concatenation
        x = x.reshape(B, D, H // 2, 2, W // 2, 2, C).permute(0, 1, 2, 4, 5, 3, 6).flatten(4)  # B, D, H/2, W/2, 4C
        return self.reduction(self.norm(x))


class SwinTransformerStage3d(nn.Module):
    """A stack of blocks alternating plain and shifted windows, then optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Size3,
        mlp_ratio: float,
        qkv_bias: bool,
        proj_drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        norm_layer: Callable[[int], nn.Module],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        shift = tuple(w // 2 for w in window_size)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock3d(
                dim,
                num_heads,
                window_size,
                (0, 0, 0) if j % 2 == 0 else shift,  # type: ignore[arg-type]
                mlp_ratio,
                qkv_bias,
                proj_drop,
                attn_drop,
                drop_path[j],
                norm_layer,
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging3d(dim, norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x if self.downsample is None else self.downsample(x)


class PatchEmbed3d(nn.Module):
    """Video to patch embedding: pad to a multiple of the patch, Conv3d, LayerNorm; returns (B, D, H, W, C)."""

    def __init__(self, patch_size: Size3, in_chans: int, embed_dim: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pd, ph, pw = _pad_amounts(tuple(x.shape[2:]), self.patch_size)  # type: ignore[arg-type]
        if pd or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pd))
        x = self.proj(x).permute(0, 2, 3, 4, 1)  # B, D, H, W, C
        return self.norm(x)


class ConvStem3d(nn.Module):
    """Early convolutions in place of the patchify convolution (Xiao et al. 2021, "Early Convolutions Help
    Transformers See Better"): one stride-2 3x3x3 convolution per halving the patch size asks for, each with
    GroupNorm and GELU, then a 1x1x1 projection and LayerNorm. Same output as `PatchEmbed3d`: (B, D, H, W, C).

    A local, translation-equivariant prior that a Swin trained from scratch on ~100 subjects lacks; it has no
    published weights, so it is for encoders trained from scratch.
    """

    def __init__(self, patch_size: Size3, in_chans: int, embed_dim: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        if any(p & (p - 1) for p in patch_size):
            raise ValueError(f"a conv stem needs power-of-two patch sizes, got {patch_size}")
        self.patch_size = patch_size
        steps = max(p.bit_length() - 1 for p in patch_size)  # stride-2 convolutions needed
        hidden = max(8, embed_dim // 2)
        layers: list[nn.Module] = []
        channels = in_chans
        for k in range(steps):
            stride = tuple(2 if p >> (k + 1) else 1 for p in patch_size)  # 2 while this axis still shrinks
            out = hidden if k < steps - 1 else embed_dim
            layers += [
                nn.Conv3d(channels, out, 3, stride=stride, padding=1, bias=False),
                nn.GroupNorm(math.gcd(8, out), out),
                nn.GELU(),
            ]
            channels = out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv3d(channels, embed_dim, kernel_size=1)
        self.norm = norm_layer(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pd, ph, pw = _pad_amounts(tuple(x.shape[2:]), self.patch_size)  # type: ignore[arg-type]
        if pd or ph or pw:
            x = F.pad(x, (0, pw, 0, ph, 0, pd))
        x = self.proj(self.convs(x)).permute(0, 2, 3, 4, 1)  # B, T/pt, H/ph, W/pw, C
        return self.norm(x)


STEMS = {"patch": PatchEmbed3d, "conv": ConvStem3d}


class SwinTransformer3d(nn.Module):
    """Video Swin Transformer: patch embedding, 4 stages, LayerNorm, global average pool, optional linear head."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 0,
        patch_size: int | Sequence[int] = (2, 4, 4),
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = (8, 7, 7),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        stem: str = "patch",
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {list(STEMS)}, got {stem!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.patch_size = _to_3tuple(patch_size, "patch_size")
        self.window_size = _to_3tuple(window_size, "window_size")
        self.embed_dim = embed_dim
        self.num_features = embed_dim * 2 ** (len(depths) - 1)

        self.patch_embed = STEMS[stem](self.patch_size, in_chans, embed_dim, norm_layer)
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            start = sum(depths[:i])
            self.layers.append(
                SwinTransformerStage3d(
                    dim=embed_dim * 2**i,
                    depth=depth,
                    num_heads=heads,
                    window_size=self.window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[start : start + depth],
                    norm_layer=norm_layer,
                    downsample=i < len(depths) - 1,
                )
            )
        self.norm = norm_layer(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay (as timm: the relative position bias tables)."""
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations."""
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> normalised token map (B, T', H', W', num_features)."""
        x = self.pos_drop(self.patch_embed(x))  # B, D, H, W, C
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool over (T', H', W'), then the head (identity when num_classes == 0)."""
        x = self.head_drop(x.mean(dim=(1, 2, 3)))  # B, C
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> (B, num_features), or (B, num_classes) with a head."""
        return self.forward_head(self.forward_features(x))


_ARCHS: dict[str, dict] = {
    "swin3d_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "swin3d_small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "swin3d_base": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def _create(arch: str, in_chans: int, num_classes: int, **kwargs) -> SwinTransformer3d:
    args = dict(patch_size=(2, 4, 4), window_size=(8, 7, 7), mlp_ratio=4.0, drop_path_rate=0.1, **_ARCHS[arch])
    args.update({k: v for k, v in kwargs.items() if v is not None})
    return SwinTransformer3d(in_chans=in_chans, num_classes=num_classes, **args)


def swin3d_tiny(*, in_chans: int = 3, num_classes: int = 0, **kwargs) -> SwinTransformer3d:
    """Swin3D-T: embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window (8, 7, 7), patch (2, 4, 4)."""
    return _create("swin3d_tiny", in_chans, num_classes, **kwargs)


def swin3d_small(*, in_chans: int = 3, num_classes: int = 0, **kwargs) -> SwinTransformer3d:
    """Swin3D-S: embed 96, depths (2, 2, 18, 2), heads (3, 6, 12, 24), window (8, 7, 7), patch (2, 4, 4)."""
    return _create("swin3d_small", in_chans, num_classes, **kwargs)


def swin3d_base(*, in_chans: int = 3, num_classes: int = 0, **kwargs) -> SwinTransformer3d:
    """Swin3D-B: embed 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32), window (8, 7, 7), patch (2, 4, 4)."""
    return _create("swin3d_base", in_chans, num_classes, **kwargs)


from cccmr_model.swin3d_weights import LoadReport, WeightsError, load_pretrained  # noqa: E402  (re-export)
