"""What the demo runs: cohort sizes, the federated schedule and the config overrides of the two federations.

Both federations use the packaged `tiny` config with the same overrides, so the only difference between the release and
the baseline is the Feature Interaction Module: the baseline has `federation.phases.fim.rounds=0` (pretrain, then
fusion), i.e. the same cine encoders and fusion head trained without LGE guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

from cccmr_model.errors import ConfigError

CONFIG = "tiny"  # the run config's `config-path`: a packaged config (configs/tiny.yaml)
CONFIG_NAME = CONFIG  # the same config for load_config
SITE_NAMES = ("anzhen", "lanzhou")  # the paper's two hospitals; further sites are named site3, site4, ...
MAX_SITES = 6


def server_lr(sites: int) -> float:
    """The demo's server step (`federation.server_lr`) for `sites` sites. FedAvg over K sites takes about 1/K of
    central training's optimizer steps; a step of 2 gives part of them back on the two-site phantom
    (benchmarks/README.md, "Why the single heads end below central"), 3 overshot there, so 3+ sites keep 2.
    One site: plain FedAvg (the federated == central tests)."""
    return 1.0 if sites == 1 else 2.0


def pretrain_batch_size(sites: int) -> int:
    """The demo's pretraining batch at each of `sites` sites (`train.phases.pretrain.batch_size`). Central training
    of the tiny config takes batches of 8 from the pooled cohort; a site with half the subjects and batches of 4
    takes as many steps per epoch. With the server step of 2 this brings the federated pretraining heads within 2
    points of central training on the two-site phantom; the FIM keeps 8, since its contrastive loss over 4 subjects
    (2 per class) cost the release 2 points there (benchmarks/README.md, "Why the single heads end below central").
    Batches of 4 were measured with two sites, so 3+ sites keep 4. One site: the config's (the federated == central
    tests)."""
    return 8 if sites == 1 else 4


@dataclass(frozen=True)
class DemoSize:
    """Cohort and schedule of one demo mode."""

    subjects: int  # per site
    test_subjects: int  # held-out, pooled from all sites' populations
    rounds: dict[str, int]  # federated rounds per phase
    local_epochs: dict[str, int]
    resample_factor: int


# Pretraining 8 rounds x 3 epochs: at 5 x 3 the heads still gained from more steps (benchmarks/README.md).
FULL = DemoSize(
    subjects=48,
    test_subjects=48,
    rounds={"pretrain": 8, "fim": 5, "fusion": 2},
    local_epochs={"pretrain": 3, "fim": 3, "fusion": 2},
    resample_factor=2,
)
QUICK = DemoSize(
    subjects=12,
    test_subjects=16,
    rounds={"pretrain": 2, "fim": 2, "fusion": 1},
    local_epochs={"pretrain": 1, "fim": 1, "fusion": 2},
    resample_factor=1,
)


def demo_size(quick: bool) -> DemoSize:
    return QUICK if quick else FULL


def site_names(count: int) -> list[str]:
    """anzhen, lanzhou, then site3, site4, ... (phantom profiles are derived from the name)."""
    if not 1 <= count <= MAX_SITES:
        raise ConfigError(f"demo: --sites must be between 1 and {MAX_SITES}, got {count}")
    return [*SITE_NAMES, *(f"site{k}" for k in range(3, MAX_SITES + 1))][:count]


def overrides(size: DemoSize, sites: list[str], seed: int, *, baseline: bool) -> list[str]:
    """`key=value` config overrides of one federation (the release, or the baseline without the FIM phase)."""
    items = [
        f"name=cc-cmr-demo{'-baseline' if baseline else ''}",
        f"seed={seed}",
        f"federation.sites=[{','.join(sites)}]",
        f"train.resample_factor={size.resample_factor}",
        "federation.share_subject_scores=true",  # per-subject scores (no IDs) give a pooled validation AUC
        "federation.round_timeout_s=600",
        f"federation.server_lr={server_lr(len(sites))}",
        f"train.phases.pretrain.batch_size={pretrain_batch_size(len(sites))}",
    ]
    for phase, rounds in size.rounds.items():
        rounds = 0 if baseline and phase == "fim" else rounds
        items += [f"federation.phases.{phase}.rounds={rounds}",
                  f"federation.phases.{phase}.local_epochs={size.local_epochs[phase]}"]  # fmt: skip
    return items
