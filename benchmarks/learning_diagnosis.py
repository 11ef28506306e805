"""Why a model fits or fails: the standard diagnosis of a network that will not learn, on a phantom cohort.

`python benchmarks/learning_diagnosis.py --cohort DIR --out OUT [--config tiny] [--set key=value ...]
[--epochs N] [--lr-range] [--save-batches]`

DIR is a cohort as `cccmr phantom --out DIR --test-subjects N` writes it (site folders plus `test/`). The sites are
ingested with the config's data settings, split as `cccmr train` splits them, and phase 1 (single-sequence
pretraining, the three focal heads) runs epoch by epoch. After every epoch it records, per head:
- the running training loss and accuracy on the augmented batches;
- AUC and accuracy on the un-augmented training subjects, the validation subjects and the held-out test set
  (the train/validation gap per epoch);
- gradient norms per layer group (patch embedding, each stage, final norm, head), averaged over the epoch.
`--lr-range` runs a learning-rate range test (Smith 2017: lr grows exponentially from 1e-6 to 1 over 100 steps;
the loss per lr); `--save-batches` writes the first augmented batch of epoch 0 as a PNG with its labels, so that
what the network sees can be checked by eye.
Writes OUT/diagnosis.json and prints one line per epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from cccmr_model.config import load_config  # noqa: E402
from cccmr_model.config.schema import ExperimentConfig  # noqa: E402
from cccmr_model.engine.central import ingest_sites, split_sites  # noqa: E402
from cccmr_model.engine.checkpoint import seed_everything  # noqa: E402
from cccmr_model.engine.runners import EncoderRunner  # noqa: E402
from cccmr_model.engine.schedule import lr_at, warmup_fraction, window_progress  # noqa: E402
from cccmr_model.engine.train import make_optimizer  # noqa: E402
from cccmr_model.metrics import binary_auc  # noqa: E402
from cccmr_model.model import CCCMRModel, build_model, set_trainable  # noqa: E402
from cccmr_model.sequences import SEQUENCES  # noqa: E402

log = logging.getLogger("cccmr.bench.diagnosis")


class InMemory(torch.utils.data.Dataset):
    """A dataset held in memory (the cache is small), keeping `labels` and `subtypes` for the sampler."""

    def __init__(self, dataset: Any) -> None:
        self.items = [dataset[i] for i in range(len(dataset))]
        self.labels = np.asarray([int(item["label"]) for item in self.items])
        self.subtypes = np.asarray([int(item["subtype"]) for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


def layer_group(name: str) -> str | None:
    """encoders.<seq>.<part>... -> '<seq>:<part>' (patch_embed, layers.i, norm), heads.<seq> -> '<seq>:head'."""
    parts = name.split(".")
    if parts[0] == "heads":
        return f"{parts[1]}:head"
    if parts[0] != "encoders":
        return None
    part = parts[2] if parts[2] != "layers" else f"stage{parts[3]}"
    return f"{parts[1]}:{part}"


@torch.no_grad()
def head_scores(model: CCCMRModel, data: InMemory, batch_size: int = 16) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per head: (P(class 1), labels) over the un-augmented subjects (LGE head: subjects with LGE only)."""
    model.eval()
    scores: dict[str, list[np.ndarray]] = defaultdict(list)
    labels: dict[str, list[np.ndarray]] = defaultdict(list)
    for start in range(0, len(data), batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        output = model(batch)
        for seq in SEQUENCES:
            rows = batch["has_lge"].bool() if seq == "lge_sax" else torch.ones(len(items), dtype=torch.bool)
            p = torch.softmax(output.logits[seq].float(), dim=1)[:, 1]  # B
            scores[seq].append(p[rows].numpy())
            labels[seq].append(batch["label"][rows].numpy())
    return {seq: (np.concatenate(scores[seq]), np.concatenate(labels[seq])) for seq in SEQUENCES}


def summarise(scored: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    out = {}
    for seq, (p, y) in scored.items():
        auc = binary_auc(p, y) if len(np.unique(y)) == 2 else float("nan")
        out[seq] = {"auc": round(float(auc), 4), "acc": round(float(np.mean((p >= 0.5) == y)), 4),
                    "p_std": round(float(np.std(p)), 4)}  # fmt: skip
    return out


def save_batch_png(batch: dict[str, torch.Tensor], path: Path) -> None:
    """The middle slice's first frame of each sequence, one row per subject, titled with the label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(8, batch["label"].shape[0])
    fig, axes = plt.subplots(rows, 4, figsize=(8, 2 * rows))
    for r in range(rows):
        sax = batch["cine_sax"][r]  # S, T, H, W
        views = [batch["cine_4ch"][r, 0, 0], sax[sax.shape[0] // 2, 0], sax[sax.shape[0] // 2].std(0),
                 batch["lge_sax"][r, batch["lge_sax"].shape[1] // 2]]  # fmt: skip
        for c, (img, title) in enumerate(zip(views, ["4CH", "SAX", "SAX temporal std", "LGE"], strict=True)):
            axes[r, c].imshow(img.numpy(), cmap="gray")
            axes[r, c].set_title(f"{title} label {int(batch['label'][r])}", fontsize=7)
            axes[r, c].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def lr_range_test(model: CCCMRModel, runner: EncoderRunner, config: ExperimentConfig, steps: int = 100) -> list:
    """Loss per learning rate, lr from 1e-6 to 1 exponentially (one batch per step, the pretrain loss)."""
    optimizer = make_optimizer(model, config, "pretrain", torch.device("cpu"))
    curve, step = [], 0
    while step < steps:
        for batch in runner.epoch(step):
            lr = 1e-6 * (1e6 ** (step / (steps - 1)))
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss, _ = runner.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            curve.append((lr, float(loss.detach())))
            step += 1
            if step >= steps or not math.isfinite(float(loss)):
                return curve
    return curve


def train_and_watch(model, runner, config, epochs, sets, out: Path, save_batches: bool) -> list[dict]:
    optimizer = make_optimizer(model, config, "pretrain", torch.device("cpu"))
    steps_per_epoch = runner.steps_per_epoch()
    total = steps_per_epoch * epochs
    warm = warmup_fraction(config.train.warmup_steps, total, (0.0, 1.0))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    history = []
    for epoch in range(epochs):
        runner.set_modes()
        start, sums, grads, correct = time.perf_counter(), defaultdict(float), defaultdict(float), {}
        for step_in_epoch, batch in enumerate(runner.epoch(epoch)):
            if save_batches and epoch == 0 and step_in_epoch == 0:
                save_batch_png(batch, out / "augmented-batch.png")
            step = epoch * steps_per_epoch + step_in_epoch
            lr = lr_at(window_progress(step, total, (0.0, 1.0)), base_lr=config.train.lr,
                       min_lr=config.train.min_lr, warmup_fraction=warm)  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = lr
            output = model(batch)
            terms = model.fim_losses(output, batch["label"], batch["has_lge"])
            loss = sum(v for k, v in terms.items() if k.startswith("cls:"))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for name, p in params:
                group = layer_group(name)
                if group is not None and p.grad is not None:
                    grads[group] += float(p.grad.norm()) ** 2 / steps_per_epoch
            if config.train.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_([p for _, p in params], config.train.grad_clip_norm)
            optimizer.step()
            for seq in SEQUENCES:
                sums[seq] += float(terms[f"cls:{seq}"].detach()) / steps_per_epoch
                hit = (output.logits[seq].argmax(1) == batch["label"]).float()
                if seq == "lge_sax":
                    hit = hit[batch["has_lge"].bool()]
                correct.setdefault(seq, []).append(hit)
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - start, 1)}
        record["train_running"] = {
            seq: {"loss": round(sums[seq], 4), "acc": round(float(torch.cat(correct[seq]).mean()), 4)}
            for seq in SEQUENCES
        }
        record["grad_norm"] = {g: round(math.sqrt(v), 5) for g, v in sorted(grads.items())}
        for name, data in sets.items():
            record[name] = summarise(head_scores(model, data))
        history.append(record)
        line = " | ".join(
            f"{seq}: loss {record['train_running'][seq]['loss']:.3f} "
            + " ".join(f"{n[:2]} {record[n][seq]['auc']:.2f}" for n in sets)
            for seq in SEQUENCES
        )
        print(f"epoch {epoch + 1:3d} lr {lr:.2e} {record['seconds']:5.1f}s  {line}", flush=True)
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, help="ingestion cache root (default OUT/cache)")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr-range", action="store_true")
    parser.add_argument("--save-batches", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    config = load_config(args.config, [*args.overrides, "train.num_workers=0"])
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "cache"
    roots = sorted(p for p in args.cohort.iterdir() if (p / "manifest.csv").exists() and p.name != "test")
    sites = ingest_sites(roots, cache, config, workers=2)
    train, val, _ = split_sites(sites, config)
    test = ingest_sites([args.cohort / "test"], cache, config, workers=2)[0].dataset
    sets = {"train": InMemory(train), "val": InMemory(val), "test": InMemory(test)}
    seed_everything(config.seed)
    model = build_model(config)
    set_trainable(model, "pretrain")
    runner = EncoderRunner(
        "pretrain", model, sets["train"], sets["train"].labels, config, torch.device("cpu"), config.seed
    )
    result: dict[str, Any] = {"config": args.config, "overrides": args.overrides,
                              "subjects": {k: len(v) for k, v in sets.items()}}  # fmt: skip
    if args.lr_range:
        curve = lr_range_test(model, runner, config)
        result["lr_range"] = curve
        for lr, loss in curve[::10]:
            print(f"lr {lr:.1e} loss {loss:.4f}")
    else:
        result["history"] = train_and_watch(model, runner, config, args.epochs, sets, args.out, args.save_batches)
    (args.out / "diagnosis.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
