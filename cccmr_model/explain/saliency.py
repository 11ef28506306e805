"""Where the model looked: a saliency map over space and time per cine sequence, and which SAX slices mattered.

Method (captum, the PyTorch project's attribution library; nothing here re-implements an attribution method):

- **HiResCAM** (Draelos & Carin 2020; Grad-CAM with the gradient kept per token instead of averaged over the map):
  `captum.attr.LayerGradientXActivation` at the token map after the blocks of the penultimate Swin stage of each
  cine encoder (14 x 14 in-plane, T/2 frames at the default size), summed over channels, positive part kept, then
  upsampled trilinearly to the input's (T, H, W). The explained output is the log-probability of the call.
  One forward pass and a backward pass through the last stages only, so it stays near the cost of a prediction,
  where integrated gradients (tens of passes) or occlusion (a pass per patch) would not.
  Why not plain Grad-CAM (`LayerGradCam`): at the last stage, where only mean pooling follows, every token has
  the same gradient and Grad-CAM reduces to CAM; on phantoms with a lesion in a known quadrant, a trained tiny
  model's Grad-CAM mass there was at chance (0.20-0.27 at any stage), HiResCAM's 0.50 at this stage
  (tests/cccmr_model/test_explain.py).
- **Slice ablation** (`captum.attr.FeatureAblation`): the SAX input's channels are three slices, which the map
  cannot tell apart; each slice is set to 0 (the z-scored mean) in turn and the drop of the explained class's
  probability is that slice's weight. Three SAX-encoder passes in one batch.

The map is shared by a sequence's input channels (slices). The explained class is the call (the most probable
subtype of a subtyping release).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import FeatureAblation, LayerAttribution, LayerGradientXActivation
from torch import Tensor, nn

from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES

METHOD = (
    "HiResCAM (captum LayerGradientXActivation) on the penultimate Swin stage of each cine encoder;"
    " SAX slices by ablation (captum FeatureAblation)"
)
TOP_K = 3
STAGE = -2  # the Swin stage whose blocks' output (before its patch merging) the map attributes to


class ChannelsFirst(nn.Module):
    """Identity on a Swin token map, seen channels-first as captum expects: (B, T, H, W, C) -> (B, C, T, H, W)."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.permute(0, 4, 1, 2, 3)  # B, C, T, H, W


def below_probe(encoder: nn.Module, x: Tensor, stage: int) -> Tensor:
    """Cine input (B, C, T, H, W) through the stem, the stages before `stage` and that stage's blocks (not its patch
    merging), without a graph: the probed token map (B, T', H', W', C)."""
    with torch.no_grad():
        x = encoder.pos_drop(encoder.patch_embed(x))  # B, T', H', W', C
        for layer in encoder.layers[:stage]:
            x = layer(x)
        for block in encoder.layers[stage].blocks:
            x = block(x)
    return x


class FromProbes(nn.Module):
    """Log-probabilities (B, C) from both cine sequences' token maps after the blocks of Swin stage `stage`.

    What the map explains: `forward(tokens_4ch, tokens_sax)` passes each map through its probe (the layers captum
    hooks), then the rest of its encoder (that stage's patch merging, the later stages, the norm, the pooling) and
    the fusion head, exactly as `model.predict` does. Gradients are needed from the probes up only, so what lies
    below runs once per subject, without a graph.
    """

    def __init__(self, model: nn.Module, stage: int) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.probes = nn.ModuleDict({seq: ChannelsFirst() for seq in CINE_SEQUENCES})

    def encoder_features(self, seq: str, tokens: Tensor) -> Tensor:
        """One sequence's pooled features (B, D) from its probed token map (B, T', H', W', C)."""
        encoder = self.model.encoders[seq]
        x = self.probes[seq](tokens).permute(0, 2, 3, 4, 1)  # B, C, T', H', W' at the probe, then back
        merging = encoder.layers[self.stage].downsample
        if merging is not None:
            x = merging(x)
        for layer in encoder.layers[self.stage + 1 :]:
            x = layer(x)
        return encoder.forward_head(encoder.norm(x))  # B, D

    def forward(self, tokens_4ch: Tensor, tokens_sax: Tensor) -> Tensor:
        features = self.encoder_features(CINE_4CH, tokens_4ch), self.encoder_features(CINE_SAX, tokens_sax)
        return torch.log_softmax(self.model.fuse(*features), dim=1)  # B, C: log-probabilities, discriminative


@dataclass(frozen=True)
class SequenceSaliency:
    """One sequence's map and what weighs most in it."""

    sequence: str
    cam: np.ndarray  # T, H, W, >= 0, max 1 (all zero when nothing supports the class)
    frame_weights: np.ndarray  # T, share of the map's mass per frame, sums to 1 (uniform for an all-zero map)
    slice_weights: np.ndarray  # S, drop of the explained class's probability when the slice is blanked

    @property
    def top_frames(self) -> list[int]:
        """The frames with the most saliency mass, most first."""
        return [int(i) for i in np.argsort(-self.frame_weights, kind="stable")[:TOP_K]]

    @property
    def top_slices(self) -> list[int]:
        """The slices whose blanking lowers the explained class most, most first."""
        return [int(i) for i in np.argsort(-self.slice_weights, kind="stable")[:TOP_K]]


@dataclass(frozen=True)
class Saliency:
    """Both cine sequences' maps for one subject, and the class explained."""

    target: int
    target_name: str
    probability: float  # of the explained class
    sequences: Mapping[str, SequenceSaliency]


def hires_cam(
    model: nn.Module, inputs: Mapping[str, Tensor], target: int, stage: int = STAGE
) -> tuple[dict[str, Tensor], Tensor]:
    """HiResCAM per sequence for inputs {seq: (1, C, T, H, W)} at Swin stage `stage` (negative: from the last).

    Returns ({seq: (T, H, W)} at input resolution, ReLU'd, unscaled; the class probabilities (1, C)).
    """
    stage = stage % len(model.encoders[CINE_SAX].layers)
    tokens = tuple(below_probe(model.encoders[seq], inputs[seq], stage) for seq in CINE_SEQUENCES)  # 1, T', H', W', C
    head = FromProbes(model, stage).eval()
    with torch.no_grad():
        probabilities = head(*tokens).exp()  # 1, C
    probes = [head.probes[seq] for seq in CINE_SEQUENCES]
    products = LayerGradientXActivation(head, probes).attribute(tokens, target=target)  # per seq 1, C, T', H', W'
    maps = {}
    for seq, product in zip(CINE_SEQUENCES, products, strict=True):
        cam = product.detach().sum(dim=1, keepdim=True).clamp_min(0)  # 1, 1, T', H', W': HiResCAM
        size = tuple(inputs[seq].shape[2:])  # -> T, H, W
        maps[seq] = LayerAttribution.interpolate(cam, size, "trilinear")[0, 0].clamp_min(0)
    return maps, probabilities


def slice_ablation(model: nn.Module, cine_4ch: Tensor, cine_sax: Tensor, target: int) -> Tensor:
    """Drop of P(target) when each SAX slice (input channel) is set to 0 in turn: (S,)."""
    with torch.no_grad():
        feat_4ch = model.encode(CINE_4CH, cine_4ch)  # 1, D

    def probability(sax: Tensor) -> Tensor:
        features = model.encode(CINE_SAX, sax)  # N, D
        return torch.softmax(model.fuse(feat_4ch.expand(len(sax), -1), features), dim=1)  # N, C

    slices = cine_sax.shape[1]
    mask = torch.arange(slices).view(1, slices, 1, 1, 1).expand_as(cine_sax)  # 1, S, T, H, W
    with torch.no_grad():
        attribution = FeatureAblation(probability).attribute(
            cine_sax, baselines=0.0, target=target, feature_mask=mask, perturbations_per_eval=slices
        )  # 1, S, T, H, W
    return attribution[0, :, 0, 0, 0]  # S


def _frame_weights(cam: Tensor) -> np.ndarray:
    mass = cam.sum(dim=(1, 2)).double()  # T
    total = float(mass.sum())
    if total <= 0:
        return np.full(len(mass), 1.0 / len(mass))
    return (mass / total).numpy()


def explain_arrays(
    model: nn.Module,
    cine_4ch: np.ndarray,
    cine_sax: np.ndarray,
    target: int,
    target_name: str,
    *,
    slices: bool = True,
    stage: int = STAGE,
) -> Saliency:
    """Saliency of one subject's preprocessed inputs (S, T, H, W) on the model's device; `slices=False` skips the
    ablation."""
    model = model.eval()
    device = next(model.parameters()).device
    x4 = torch.from_numpy(np.ascontiguousarray(cine_4ch, dtype=np.float32))[None].to(device)  # 1, 1, T, H, W
    xs = torch.from_numpy(np.ascontiguousarray(cine_sax, dtype=np.float32))[None].to(device)  # 1, 3, T, H, W
    maps, probabilities = hires_cam(model, {CINE_4CH: x4, CINE_SAX: xs}, target, stage)
    ablated = {CINE_SAX: slice_ablation(model, x4, xs, target).cpu() if slices else torch.zeros(xs.shape[1])}
    ablated[CINE_4CH] = torch.zeros(x4.shape[1])  # one plane: nothing to rank
    sequences = {}
    for seq, cam in maps.items():
        cam = cam.float().cpu()  # T, H, W
        peak = float(cam.max())
        scaled = cam / peak if peak > 0 else cam  # T, H, W
        sequences[seq] = SequenceSaliency(
            seq, scaled.numpy().astype(np.float32), _frame_weights(cam), ablated[seq].double().numpy()
        )
    return Saliency(target, target_name, float(probabilities[0, target]), sequences)


def mass_fraction(cam: np.ndarray, region: np.ndarray) -> float:
    """Share of a map's mass inside a boolean region of the same shape (0 for an all-zero map)."""
    total = float(cam.sum())
    return float(cam[region].sum()) / total if total > 0 else 0.0


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened), as in Adebayo et al. 2018."""
    from scipy.stats import spearmanr

    result = spearmanr(a.ravel(), b.ravel())
    value = float(result.statistic)
    return 0.0 if np.isnan(value) else value
