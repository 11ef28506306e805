"""Typed, frozen experiment configuration.

Every setting of the project lives in one of these dataclasses; YAML files (the packaged ones in the
repository's `configs/`) are loaded into them by `cccmr_model.config.loader`. Field comments give the paper's value
where the paper names one. A dataclass checks its own invariants in `__post_init__` and raises `ValueError` with a
message that the loader prefixes with the file and key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cccmr_model.sequences import SEQUENCES

CONFIG_VERSION = 1


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class EncoderConfig:
    """Video Swin Transformer encoder shared by the three sequences (one instance per sequence)."""

    arch: Literal["swin3d_tiny", "swin3d_small", "swin3d_base"] = "swin3d_tiny"
    # Architecture overrides (None = the published value of `arch`); the tiny CPU config shrinks these.
    embed_dim: int | None = None
    depths: tuple[int, ...] | None = None
    num_heads: tuple[int, ...] | None = None
    window_size: tuple[int, int, int] | None = None
    patch_size: tuple[int, int, int] = (2, 4, 4)
    # patch: one patchify convolution (the published Swin; loads pretrained weights); conv: early convolutions
    # (Xiao et al. 2021), a local prior for encoders trained from scratch (benchmarks/README.md, "learning").
    stem: Literal["patch", "conv"] = "patch"
    drop_path_rate: float = 0.1
    grad_checkpointing: bool = False
    # Local weight files per sequence (torchvision, official Video-Swin or 2D ImageNet Swin); None = random init.
    pretrained: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(0.0 <= self.drop_path_rate < 1.0, "drop_path_rate must be in [0, 1)")
        unknown = set(self.pretrained) - set(SEQUENCES)
        _require(not unknown, f"pretrained has unknown sequences {sorted(unknown)}; expected {list(SEQUENCES)}")
        loaded = sorted(seq for seq, path in self.pretrained.items() if path)
        _require(
            self.stem == "patch" or not loaded,
            f"stem 'conv' has no published weights, but pretrained weights are set for {loaded}; "
            "use stem: patch to load them",
        )
        if self.depths is not None and self.num_heads is not None:
            _require(len(self.depths) == len(self.num_heads), "depths and num_heads must have the same length")
        if self.embed_dim is not None:
            _require(self.embed_dim > 0, "embed_dim must be positive")


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    fusion_hidden: int = 256  # two-layer MLP on the concatenated cine features
    fusion_dropout: float = 0.1

    def __post_init__(self) -> None:
        _require(self.fusion_hidden > 0, "fusion_hidden must be positive")
        _require(0.0 <= self.fusion_dropout < 1.0, "fusion_dropout must be in [0, 1)")


@dataclass(frozen=True)
class DataConfig:
    """DICOM preprocessing (paper section 3.1) and series discovery."""

    image_size: int = 224
    # The crop: a field_of_view_mm square around the heart located at ingestion ("heart", falling back to the
    # image centre when localisation fails) or around the image centre ("centre"); output pixels are
    # field_of_view_mm / image_size mm.
    crop: Literal["heart", "centre"] = "heart"
    field_of_view_mm: float = 160.0
    # In-plane resolution every image is brought to before the crop (FWHM, mm): a Gaussian blur of FWHM
    # sqrt(resolution_mm^2 - pixel^2), none for images already that coarse; 0 = off. Scanners and generators differ
    # in resolution more than in anything else the crop keeps: a model trained on coarse images meets finer ones.
    resolution_mm: float = 0.0
    # Reorder each series' pixels (quarter turns, a mirror) to the standard display (SAX: patient left to the image
    # right, inferior down; 4CH: apex up), read from ImageOrientationPatient (data/orientation.py); false keeps
    # the scanner's pixel order.
    display_orientation: bool = True
    # Turn the 4CH crop so that the LV long axis, taken from the subject's SAX stack (its slice normal), points
    # straight down to the base: a 4CH is prescribed at the operator's angle (apex up in one centre, 45 deg off in
    # another), which quarter turns do not undo. Only with `crop: heart` and a located heart.
    align_4ch: bool = True
    frames: int = 16  # frames resampled over one cardiac cycle
    slices: dict[str, int] = field(default_factory=lambda: {"cine_4ch": 1, "cine_sax": 3, "lge_sax": 6})
    clip_percentiles: tuple[float, float] = (0.1, 99.9)
    min_frames: int = 8
    sax_description_patterns: tuple[str, ...] = ("sax", "short", "sa_", "sa ", "stack")
    fourch_description_patterns: tuple[str, ...] = ("4ch", "4 ch", "4-ch", "four", "4cv", "hla")
    lge_description_patterns: tuple[str, ...] = ("lge", "psir", "de_", "delayed", "late", "mde", "ir_")
    val_fraction: float = 0.2  # per site, stratified by label, seeded

    @property
    def pixel_spacing_mm(self) -> float:
        """In-plane spacing of the model input: field_of_view_mm / image_size."""
        return self.field_of_view_mm / self.image_size

    def __post_init__(self) -> None:
        _require(self.image_size >= 32, "image_size must be at least 32")
        _require(self.crop in ("heart", "centre"), "crop must be 'heart' or 'centre'")
        _require(self.field_of_view_mm > 0, "field_of_view_mm must be positive")
        _require(0.0 <= self.resolution_mm <= 20.0, "resolution_mm must be in [0, 20] (0 = off)")
        _require(self.frames >= 2, "frames must be at least 2")
        _require(set(self.slices) == set(SEQUENCES), f"slices must name exactly {list(SEQUENCES)}")
        _require(all(n >= 1 for n in self.slices.values()), "slices per sequence must be at least 1")
        _require(self.slices["cine_4ch"] == 1, "slices of cine_4ch must be 1 (a single long-axis plane)")
        lo, hi = self.clip_percentiles
        _require(0.0 <= lo < hi <= 100.0, "clip_percentiles must satisfy 0 <= low < high <= 100")
        _require(2 <= self.min_frames <= self.frames * 4, "min_frames must be at least 2")
        _require(0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation a cine series survives; applied alike to all slices of one sequence."""

    temporal_offset: bool = True
    # In-plane rotation: a short axis prescribed at another angle, a 4CH tilted. 20 (10 before) lifted the release
    # on a 25 deg rotated test set from 0.847 to 0.894 over 5 seeds, clean test AUC 0.923 -> 0.930.
    max_rotation_deg: float = 20.0
    # Shift as a fraction of the image side, so that it means the same at 64 px as at 224 px (0.036 = 8 px of 224;
    # a shift in pixels sized for 224 px moved the heart by an eighth of a 64 px image).
    max_shift_fraction: float = 0.036
    # Zoom about the centre by a factor drawn log-uniformly in [1 / (1 + z), 1 + z]: hearts of another size in the
    # field of view (anatomy, a generator's or scanner's scale); 0 = none.
    max_zoom: float = 0.0
    # LGE's rotation, shift and zoom are the draws above times this: LGE only guides training (the release reads
    # cine alone), so it can keep a milder geometry than the cine it should make robust. 1 = as cine.
    lge_geometry_scale: float = 1.0
    flip_prob: float = 0.5
    intensity_jitter: float = 0.1
    # Contrast curve: intensities (scaled to 0..1 per sequence) raised to a gamma drawn log-uniformly in
    # [1 / (1 + g), 1 + g], then z-scored again: another scanner's or renderer's tissue contrast; 0 = none.
    max_gamma: float = 0.0
    # Gaussian blur of sigma drawn uniformly in [0, b] pixels: another in-plane resolution; 0 = none.
    max_blur_px: float = 0.0

    def __post_init__(self) -> None:
        _require(0.0 <= self.max_rotation_deg <= 180.0, "max_rotation_deg must be in [0, 180]")
        _require(0.0 <= self.max_shift_fraction <= 0.5, "max_shift_fraction must be in [0, 0.5]")
        _require(0.0 <= self.max_zoom <= 1.0, "max_zoom must be in [0, 1]")
        _require(0.0 <= self.lge_geometry_scale <= 1.0, "lge_geometry_scale must be in [0, 1]")
        _require(0.0 <= self.flip_prob <= 1.0, "flip_prob must be in [0, 1]")
        _require(self.intensity_jitter >= 0.0, "intensity_jitter must be >= 0")
        _require(0.0 <= self.max_gamma <= 2.0, "max_gamma must be in [0, 2]")
        _require(0.0 <= self.max_blur_px <= 5.0, "max_blur_px must be in [0, 5]")


@dataclass(frozen=True)
class PhaseConfig:
    epochs: int
    lr: float | None = None  # None = train.lr
    batch_size: int | None = None  # None = train.batch_size (the batch of one optimizer step at one site)

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "epochs must be at least 1")
        _require(self.lr is None or self.lr > 0, "lr must be positive")
        _require(self.batch_size is None or self.batch_size >= 2, "batch_size must be at least 2")


def _default_phases() -> dict[str, PhaseConfig]:
    return {"pretrain": PhaseConfig(300), "fim": PhaseConfig(600), "fusion": PhaseConfig(10)}


PHASES = ("pretrain", "fim", "fusion")
AGGREGATIONS = ("fedavg", "median", "trimmed_mean")  # federation.aggregation
WIRES = ("fp32", "bf16", "int8")  # federation.wire (cccmr_model/compression.py)


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-3  # AdamW, cosine annealing over each phase
    min_lr: float = 0.0
    weight_decay: float = 0.05
    warmup_steps: int = 0
    batch_size: int = 8
    resample_factor: int = 4  # four-fold resampling of the training set
    focal_gamma: float = 2.0
    fsa_temperature: float = 1.0
    fsa_label_averaged: bool = True
    uncertainty_weighting: bool = True  # False = the "FIM without U-A" ablation (fixed weights of 1)
    uncertainty_lr_scale: float = 1.0  # the U-A sigmas' learning rate = this x the phase's (schedule and all)
    phases: dict[str, PhaseConfig] = field(default_factory=_default_phases)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA
    num_workers: int = 2
    grad_clip_norm: float | None = 1.0

    def __post_init__(self) -> None:
        _require(self.lr > 0, "lr must be positive")
        _require(0.0 <= self.min_lr <= self.lr, "min_lr must be in [0, lr]")
        _require(self.weight_decay >= 0, "weight_decay must be >= 0")
        _require(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        _require(self.batch_size >= 2, "batch_size must be at least 2 (the FSA loss needs both classes per batch)")
        _require(self.resample_factor >= 1, "resample_factor must be at least 1")
        _require(self.focal_gamma >= 0, "focal_gamma must be >= 0")
        _require(self.fsa_temperature > 0, "fsa_temperature must be positive")
        _require(self.uncertainty_lr_scale > 0, "uncertainty_lr_scale must be positive")
        _require(set(self.phases) == set(PHASES), f"phases must name exactly {list(PHASES)}")
        _require(self.num_workers >= 0, "num_workers must be >= 0")
        _require(self.grad_clip_norm is None or self.grad_clip_norm > 0, "grad_clip_norm must be positive")
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device must be auto, cpu, cuda or cuda:N",
        )

    def phase_lr(self, phase: str) -> float:
        """The base learning rate of `phase`: its own `lr`, else `lr`."""
        override = self.phases[phase].lr
        return self.lr if override is None else override

    def phase_batch_size(self, phase: str) -> int:
        """The training batch of `phase`: its own `batch_size`, else `batch_size`."""
        override = self.phases[phase].batch_size
        return self.batch_size if override is None else override


@dataclass(frozen=True)
class FederatedPhaseConfig:
    rounds: int  # 0 skips the phase (e.g. the cine-only baseline without LGE guidance: no fim rounds)
    local_epochs: int

    def __post_init__(self) -> None:
        _require(self.rounds >= 0, "rounds must be >= 0")
        _require(self.local_epochs >= 1, "local_epochs must be at least 1")


def _default_federated_phases() -> dict[str, FederatedPhaseConfig]:
    return {
        "pretrain": FederatedPhaseConfig(rounds=30, local_epochs=10),
        "fim": FederatedPhaseConfig(rounds=60, local_epochs=10),
        "fusion": FederatedPhaseConfig(rounds=2, local_epochs=5),
    }


@dataclass(frozen=True)
class FederationConfig:
    sites: tuple[str, ...] = ("anzhen", "lanzhou")  # simulation: partition id -> site name
    phases: dict[str, FederatedPhaseConfig] = field(default_factory=_default_federated_phases)
    min_sites: int = 1
    round_timeout_s: float = 3600.0
    evaluate_every: int = 1
    share_subject_scores: bool = False  # per-subject scores (no IDs) for a pooled AUC
    max_update_norm: float | None = None  # reject replies whose update L2 norm exceeds this
    max_update_ratio: float | None = 3.0  # without max_update_norm: this x max(1, L2 norm of the sent groups)
    max_num_examples: int | None = None  # reject replies claiming more training samples (the FedAvg weight)
    max_examples_ratio: float = 10.0  # without max_num_examples: this x the lower median of the round's claims
    aggregation: str = "fedavg"  # fedavg | median | trimmed_mean (server/aggregation.py)
    trim_fraction: float = 0.2  # trimmed_mean: fraction cut at each end, per coordinate
    server_lr: float = 1.0  # global += server_lr x (aggregate - global); FedOpt's server step (server/aggregation.py)
    wire: str = "bf16"  # fp32 | bf16 | int8: how parameters cross the network (cccmr_model/wire_codec.py)

    def __post_init__(self) -> None:
        _require(len(self.sites) >= 1, "sites must list at least one site")
        _require(len(set(self.sites)) == len(self.sites), "sites must be unique")
        _require(set(self.phases) == set(PHASES), f"phases must name exactly {list(PHASES)}")
        _require(any(p.rounds > 0 for p in self.phases.values()), "phases: at least one phase needs rounds > 0")
        _require(self.min_sites >= 1, "min_sites must be at least 1")
        _require(self.round_timeout_s > 0, "round_timeout_s must be positive")
        _require(self.evaluate_every >= 1, "evaluate_every must be at least 1")
        _require(self.max_update_norm is None or self.max_update_norm > 0, "max_update_norm must be positive")
        _require(self.max_update_ratio is None or self.max_update_ratio > 0, "max_update_ratio must be positive")
        _require(self.max_num_examples is None or self.max_num_examples > 0, "max_num_examples must be positive")
        _require(self.max_examples_ratio >= 1, "max_examples_ratio must be at least 1")
        _require(self.aggregation in AGGREGATIONS, f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        _require(0.0 <= self.trim_fraction < 0.5, "trim_fraction must be in [0, 0.5)")
        _require(0.0 < self.server_lr <= 10.0, "server_lr must be in (0, 10]")
        _require(self.wire in WIRES, f"wire must be one of {', '.join(WIRES)}")
        _require(
            self.aggregation == "fedavg" or self.min_sites >= 3,
            f"aggregation {self.aggregation} needs min_sites >= 3: with two replies a median or trimmed mean is "
            "their mean and outvotes no one",
        )
        _require(
            self.aggregation != "trimmed_mean" or int(self.trim_fraction * self.min_sites) >= 1,
            f"aggregation trimmed_mean: trim_fraction {self.trim_fraction} x min_sites {self.min_sites} is below 1, "
            "so a round with min_sites replies would trim nothing",
        )


@dataclass(frozen=True)
class CentralDPConfig:
    """Site-level DP: Flower's client-side fixed clipping wrapper and mod."""

    enabled: bool = False
    noise_multiplier: float = 1.0
    clipping_norm: float = 10.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        _require(self.noise_multiplier >= 0, "noise_multiplier must be >= 0")
        _require(self.clipping_norm > 0, "clipping_norm must be positive")
        _require(0 < self.delta < 1, "delta must be in (0, 1)")


@dataclass(frozen=True)
class DPSGDConfig:
    """Sample-level DP-SGD with opacus at each site (phases whose loss is a sum over samples)."""

    enabled: bool = False
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float = 10.0  # local training stops when this is reached

    def __post_init__(self) -> None:
        _require(self.noise_multiplier > 0, "noise_multiplier must be positive")
        _require(self.max_grad_norm > 0, "max_grad_norm must be positive")
        _require(0 < self.delta < 1, "delta must be in (0, 1)")
        _require(self.epsilon_budget > 0, "epsilon_budget must be positive")


@dataclass(frozen=True)
class PrivacyConfig:
    central_dp: CentralDPConfig = field(default_factory=CentralDPConfig)
    dp_sgd: DPSGDConfig = field(default_factory=DPSGDConfig)


@dataclass(frozen=True)
class EvaluationConfig:
    bootstrap_resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    threshold: float = 0.5  # screening call: P(cardiomyopathy) >= threshold

    def __post_init__(self) -> None:
        _require(self.bootstrap_resamples >= 10, "bootstrap_resamples must be at least 10")
        _require(0.5 < self.confidence < 1.0, "confidence must be in (0.5, 1)")
        _require(0.0 < self.threshold < 1.0, "threshold must be in (0, 1)")


@dataclass(frozen=True)
class ExperimentConfig:
    version: int = CONFIG_VERSION
    name: str = "cc-cmr"
    task: Literal["screening", "subtyping"] = "screening"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self) -> None:
        _require(self.version == CONFIG_VERSION, f"version must be {CONFIG_VERSION} (this release reads no other)")
        _require(self.federation.min_sites <= len(self.federation.sites), "federation.min_sites exceeds sites")

    @property
    def num_classes(self) -> int:
        """2 for screening (healthy, cardiomyopathy); 5 ESC subtypes for subtyping."""
        return 2 if self.task == "screening" else 5
