"""The CC-CMR model (paper sections 2.1-2.3): three sequence encoders, the Feature Interaction Module, cine fusion.

- One Video Swin encoder per sequence (`encoders.<seq>.`): 4CH cine with its single slice as one channel, SAX cine
  with its 3 slices as channels, SAX LGE with its 6 slices as time and intensity copied to 3 channels (section 3.1).
- A linear classification head per sequence (`heads.<seq>.`), trained with the focal CLS loss (eq. 1).
- The Feature Interaction Module: CLS and FSA terms (eq. 2) weighted by learnable uncertainties (`uncertainty.`,
  eq. 4) or by fixed weights of 1 (the "FIM without U-A" ablation).
- A two-layer MLP (`fusion.`) on the concatenated 4CH and SAX cine features: the only path used at inference,
  which never needs LGE.

The three training phases select parameter groups by name prefix (`PHASE_GROUPS`), so a federation can send and
aggregate only what a phase trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from cccmr_model import swin3d
from cccmr_model.config.schema import EncoderConfig, ExperimentConfig
from cccmr_model.losses import FixedWeighting, UncertaintyWeighting, focal_loss, fsa_loss, masked_focal_loss
from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES, LGE_SAX, SEQUENCE_PAIRS, SEQUENCES

log = logging.getLogger(__name__)

# Parameter-name prefixes each training phase trains (and a federation exchanges).
PHASE_GROUPS: dict[str, tuple[str, ...]] = {
    "pretrain": ("encoders.", "heads."),
    "fim": ("encoders.", "heads.", "uncertainty."),
    "fusion": ("fusion.",),
}
# Input channels of each sequence's encoder (LGE: intensity copied to RGB, its slices act as time).
ENCODER_IN_CHANS: dict[str, int] = {CINE_4CH: 1, CINE_SAX: 3, LGE_SAX: 3}
LGE_CHANNELS = 3
# The six FIM terms, in the order of the uncertainty vector.
FIM_TERMS: tuple[str, ...] = tuple(f"cls:{seq}" for seq in SEQUENCES) + tuple(f"fsa:{a}|{b}" for a, b in SEQUENCE_PAIRS)
# A loss term computed from the features and logits of its sequences, the labels and a row mask (None: all rows).
_Term = Callable[[tuple[Tensor, ...], tuple[Tensor, ...], Tensor, Tensor | None], Tensor]
_ENCODER_OVERRIDES = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "stem", "drop_path_rate")


class ModelOutput(NamedTuple):
    features: dict[str, Tensor]  # seq -> (B, D) pooled encoder features
    logits: dict[str, Tensor]  # seq -> (B, C) per-sequence head logits


def phase_state(state_dict: Mapping[str, Tensor], phase: str) -> dict[str, Tensor]:
    """The entries of a state dict that `phase` trains (selected by the prefixes in `PHASE_GROUPS`)."""
    prefixes = _phase_prefixes(phase)
    return {name: value for name, value in state_dict.items() if name.startswith(prefixes)}


def set_trainable(model: nn.Module, phase: str) -> list[str]:
    """Set requires_grad for exactly the parameters `phase` trains; returns their names."""
    prefixes = _phase_prefixes(phase)
    trained = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
        if parameter.requires_grad:
            trained.append(name)
    return trained


def strip_lge(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict without the LGE encoder and head: what a model built with `with_lge=False` loads."""
    lge_prefixes = (f"encoders.{LGE_SAX}.", f"heads.{LGE_SAX}.")
    return {name: value for name, value in state_dict.items() if not name.startswith(lge_prefixes)}


def lge_to_video(lge: Tensor) -> Tensor:
    """LGE slices (B, S, H, W) -> (B, 3, S, H, W): the slices act as time, intensity copied to 3 channels."""
    if lge.ndim != 4:
        raise ValueError(f"lge_sax must be (B, slices, H, W), got {tuple(lge.shape)}")
    return lge.unsqueeze(1).expand(-1, LGE_CHANNELS, -1, -1, -1)  # B, 3, S, H, W


class CCCMRModel(nn.Module):
    """Encoders and heads per sequence, the FIM weighting, and the cine fusion MLP (see the module docstring)."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        num_features: int,
        num_classes: int,
        *,
        fusion_hidden: int = 256,
        fusion_dropout: float = 0.1,
        uncertainty_weighting: bool = True,
        focal_gamma: float = 2.0,
        fsa_temperature: float = 1.0,
        fsa_label_averaged: bool = True,
    ) -> None:
        super().__init__()
        missing = [seq for seq in CINE_SEQUENCES if seq not in encoders]
        if missing or set(encoders) - set(SEQUENCES):
            raise ValueError(
                f"encoders must cover {list(CINE_SEQUENCES)} (and optionally {LGE_SAX}), got {list(encoders)}"
            )
        self.sequences: tuple[str, ...] = tuple(seq for seq in SEQUENCES if seq in encoders)
        self.num_features = num_features
        self.num_classes = num_classes
        self.focal_gamma = focal_gamma
        self.fsa_temperature = fsa_temperature
        self.fsa_label_averaged = fsa_label_averaged
        self.encoders = nn.ModuleDict({seq: encoders[seq] for seq in self.sequences})
        self.heads = nn.ModuleDict({seq: nn.Linear(num_features, num_classes) for seq in self.sequences})
        weighting = UncertaintyWeighting if uncertainty_weighting else FixedWeighting
        self.uncertainty = weighting(FIM_TERMS)
        self.fusion = nn.Sequential(
            nn.Linear(2 * num_features, fusion_hidden),
            nn.GELU(),
            nn.Dropout(fusion_dropout),
            nn.Linear(fusion_hidden, num_classes),
        )

    @property
    def with_lge(self) -> bool:
        """Whether this model holds the LGE encoder and head (training) or not (cine-only inference)."""
        return LGE_SAX in self.encoders

    def encode(self, seq: str, x: Tensor) -> Tensor:
        """One sequence's pooled features (B, D); LGE input is (B, S, H, W), cine input (B, C, T, H, W)."""
        if seq == LGE_SAX:
            x = lge_to_video(x)
        return self.encoders[seq](x)  # B, D

    def features(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per-sequence embeddings (B, D) of every sequence this model has and the batch holds (t-SNE, FIM)."""
        return {seq: self.encode(seq, batch[seq]) for seq in self.sequences if seq in batch}

    def forward(self, batch: Mapping[str, Tensor]) -> ModelOutput:
        """Training forward: features and head logits per sequence.

        The LGE encoder runs on the whole batch (rows without LGE hold zeros) so that the graph does not depend on
        which subjects have LGE; `fim_losses` then leaves those rows out of every LGE term.
        """
        features = self.features(batch)
        logits = {seq: self.heads[seq](feature) for seq, feature in features.items()}  # B, C
        return ModelOutput(features=features, logits=logits)

    def fim_losses(self, output: ModelOutput, labels: Tensor, has_lge: Tensor | None = None) -> dict[str, Tensor]:
        """The six FIM terms `cls:<seq>` (eq. 1) and `fsa:<a>|<b>` (eq. 2).

        Subjects without LGE contribute only to the cine terms; an LGE term with too few LGE subjects (none for
        CLS, fewer than two for FSA) is 0 (attached to the graph), and one computed without LGE features a constant
        0. Rows are left out by masking, never by indexing, so no step waits on the GPU (no host sync).
        """
        batch_size = labels.shape[0]
        has_lge = torch.ones(batch_size, dtype=torch.bool, device=labels.device) if has_lge is None else has_lge.bool()
        losses: dict[str, Tensor] = {}
        for seq in SEQUENCES:
            rows = has_lge if seq == LGE_SAX else None
            losses[f"cls:{seq}"] = self._masked_term(output, (seq,), labels, rows, self._cls)
        for a, b in SEQUENCE_PAIRS:
            rows = has_lge if LGE_SAX in (a, b) else None
            losses[f"fsa:{a}|{b}"] = self._masked_term(output, (a, b), labels, rows, self._fsa)
        return losses

    def fim_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """Eq. 4 with learnable sigmas, or the plain sum for the fixed-weight ablation."""
        return self.uncertainty(losses)

    def fuse(self, feat_4ch: Tensor, feat_sax: Tensor) -> Tensor:
        """Fusion logits (B, C) from the 4CH and SAX cine features, each (B, D)."""
        return self.fusion(torch.cat([feat_4ch, feat_sax], dim=1))  # B, C

    def predict(self, cine_4ch: Tensor, cine_sax: Tensor) -> Tensor:
        """Cine-only inference: 4CH (B, 1, T, H, W) and SAX (B, 3, T, H, W) cine -> fused logits (B, C)."""
        return self.fuse(self.encode(CINE_4CH, cine_4ch), self.encode(CINE_SAX, cine_sax))

    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay: the uncertainty sigmas and whatever the encoders name."""
        names = {f"uncertainty.{name}" for name, _ in self.uncertainty.named_parameters()}
        for seq, encoder in self.encoders.items():
            if hasattr(encoder, "no_weight_decay"):
                names |= {f"encoders.{seq}.{name}" for name in encoder.no_weight_decay()}
        return names

    def _cls(
        self, feats: tuple[Tensor, ...], logits: tuple[Tensor, ...], labels: Tensor, rows: Tensor | None
    ) -> Tensor:
        if rows is None:
            return focal_loss(logits[0], labels, gamma=self.focal_gamma)
        return masked_focal_loss(logits[0], labels, rows, gamma=self.focal_gamma)  # 0 without LGE subjects

    def _fsa(
        self, feats: tuple[Tensor, ...], logits: tuple[Tensor, ...], labels: Tensor, rows: Tensor | None
    ) -> Tensor:
        v, u = feats
        # One LGE subject gives exactly 0 (a 1 x 1 similarity matrix), as does a batch of one class.
        return fsa_loss(
            v,
            u,
            labels,
            temperature=self.fsa_temperature,
            label_averaged=self.fsa_label_averaged,
            num_classes=self.num_classes,
            weights=rows,
        )

    def _masked_term(
        self,
        output: ModelOutput,
        seqs: tuple[str, ...],
        labels: Tensor,
        rows: Tensor | None,
        term: _Term,
    ) -> Tensor:
        """`term` over the rows selected by the boolean mask `rows` (all rows if None); 0 without the features."""
        if any(seq not in output.features for seq in seqs):
            return labels.new_zeros((), dtype=torch.float32)
        feats = tuple(output.features[seq] for seq in seqs)
        logits = tuple(output.logits[seq] for seq in seqs)
        return term(feats, logits, labels, rows)


def build_encoder(encoder_config: EncoderConfig, seq: str) -> nn.Module:
    """One sequence's Swin encoder from the config (overrides, grad checkpointing, local pretrained weights)."""
    factory = getattr(swin3d, encoder_config.arch)
    overrides = {key: getattr(encoder_config, key) for key in _ENCODER_OVERRIDES}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    encoder = factory(in_chans=ENCODER_IN_CHANS[seq], num_classes=0, **overrides)
    if encoder_config.grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    source = encoder_config.pretrained.get(seq)
    if source:
        report = swin3d.load_pretrained(encoder, source)
        log.info("encoder %s: loaded pretrained weights from %s: %s", seq, source, report)
    return encoder


def build_model(config: ExperimentConfig, *, with_lge: bool = True) -> CCCMRModel:
    """The CC-CMR model of `config`; `with_lge=False` builds the cine-only inference model (no LGE weights)."""
    sequences = SEQUENCES if with_lge else CINE_SEQUENCES
    encoders = {seq: build_encoder(config.model.encoder, seq) for seq in sequences}
    widths = {seq: encoder.num_features for seq, encoder in encoders.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"all encoders must have the same feature width, got {widths}")
    return CCCMRModel(
        encoders,
        num_features=widths[CINE_4CH],
        num_classes=config.num_classes,
        fusion_hidden=config.model.fusion_hidden,
        fusion_dropout=config.model.fusion_dropout,
        uncertainty_weighting=config.train.uncertainty_weighting,
        focal_gamma=config.train.focal_gamma,
        fsa_temperature=config.train.fsa_temperature,
        fsa_label_averaged=config.train.fsa_label_averaged,
    )


def _phase_prefixes(phase: str) -> tuple[str, ...]:
    if phase not in PHASE_GROUPS:
        raise ValueError(f"unknown phase {phase!r}; expected one of {list(PHASE_GROUPS)}")
    return PHASE_GROUPS[phase]
