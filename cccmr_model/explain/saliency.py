"""Where the model looked: Grad-CAM over space and time per cine sequence, and which SAX slices mattered.

Method (captum, the PyTorch project's attribution library):

- **Grad-CAM** (`captum.attr.LayerGradCam`) on the output of each encoder's last Swin stage (after its norm), the
  token map the fusion head pools. One forward pass and a backward pass through that stage only, so it stays cheap
  at the default size, where integrated gradients (tens of passes) or occlusion (one pass per patch) would not.
  The map (T', H', W') is upsampled trilinearly to the input's (T, H, W); it is shared by the input channels.
- **Slice ablation** (`captum.attr.FeatureAblation`): the SAX input's channels are three slices, which Grad-CAM
  cannot tell apart; each slice is set to 0 (the z-scored mean) in turn and the drop of the explained class's
  probability is that slice's weight. Three SAX-encoder passes in one batch.

The explained class is the call (the most probable subtype of a subtyping release).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from captum.attr import FeatureAblation, LayerAttribution, LayerGradCam
from torch import Tensor, nn

from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES

METHOD = "Grad-CAM (captum LayerGradCam) on the last Swin stage of each cine encoder; SAX slices by ablation"
TOP_K = 3


class ChannelsFirst(nn.Module):
    """Identity on a Swin token map, seen channels-first as Grad-CAM expects: (B, T, H, W, C) -> (B, C, T, H, W)."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.permute(0, 4, 1, 2, 3)  # B, C, T, H, W


def below_last_stage(encoder: nn.Module, x: Tensor) -> Tensor:
    """Cine input (B, C, T, H, W) through the stem and every stage but the last, without a graph: (B, T', H', W', C)."""
    with torch.no_grad():
        x = encoder.pos_drop(encoder.patch_embed(x))  # B, T', H', W', C
        for stage in encoder.layers[:-1]:
            x = stage(x)
    return x


class LastStage(nn.Module):
    """Logits (B, C) from one sequence's last-stage input, the other sequence's features held fixed.

    What Grad-CAM explains: `forward(below)` runs the last Swin stage, its norm, a probe (the layer Grad-CAM hooks),
    the pooling and the fusion head, exactly as `model.predict` does. Gradients are needed at the probe only, so
    the stages below run once per subject, without a graph.
    """

    def __init__(self, model: nn.Module, seq: str, other_features: Tensor) -> None:
        super().__init__()
        self.model = model
        self.seq = seq
        self.other = other_features  # B, D of the other cine sequence
        self.probe = ChannelsFirst()

    def encoder_features(self, below: Tensor) -> Tensor:
        """The sequence's pooled features (B, D) from its last-stage input (B, T', H', W', C)."""
        encoder = self.model.encoders[self.seq]
        tokens = encoder.norm(encoder.layers[-1](below))  # B, T', H', W', D
        probed = self.probe(tokens)  # B, D, T', H', W'
        return encoder.forward_head(probed.permute(0, 2, 3, 4, 1))  # B, D

    def forward(self, below: Tensor) -> Tensor:
        features = self.encoder_features(below)  # B, D
        pair = (features, self.other) if self.seq == CINE_4CH else (self.other, features)
        return self.model.fuse(*pair)  # B, C


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


def grad_cam(model: nn.Module, inputs: Mapping[str, Tensor], target: int) -> tuple[dict[str, Tensor], Tensor]:
    """Grad-CAM per sequence for inputs {seq: (1, C, T, H, W)}.

    Returns ({seq: (T, H, W)} at input resolution, ReLU'd, unscaled; the class probabilities (1, C)).
    """
    below = {seq: below_last_stage(model.encoders[seq], inputs[seq]) for seq in CINE_SEQUENCES}  # 1, T', H', W', C
    with torch.no_grad():
        features = {seq: LastStage(model, seq, torch.empty(0)).encoder_features(below[seq]) for seq in CINE_SEQUENCES}
        probabilities = torch.softmax(model.fuse(features[CINE_4CH], features[CINE_SAX]), dim=1)  # 1, C
    maps = {}
    for seq, other in zip(CINE_SEQUENCES, reversed(CINE_SEQUENCES), strict=True):
        head = LastStage(model, seq, features[other]).eval()
        cam = LayerGradCam(head, head.probe).attribute(below[seq], target=target, relu_attributions=True)
        size = tuple(inputs[seq].shape[2:])  # 1, 1, T', H', W' -> T, H, W
        maps[seq] = LayerAttribution.interpolate(cam.detach(), size, "trilinear")[0, 0].clamp_min(0)
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
) -> Saliency:
    """Saliency of one subject's preprocessed inputs (S, T, H, W) on the model's device; `slices=False` skips the
    ablation."""
    model = model.eval()
    device = next(model.parameters()).device
    x4 = torch.from_numpy(np.ascontiguousarray(cine_4ch, dtype=np.float32))[None].to(device)  # 1, 1, T, H, W
    xs = torch.from_numpy(np.ascontiguousarray(cine_sax, dtype=np.float32))[None].to(device)  # 1, 3, T, H, W
    maps, probabilities = grad_cam(model, {CINE_4CH: x4, CINE_SAX: xs}, target)
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
