"""Fig. 3 of the paper: t-SNE of the two cine embeddings before and after the Feature Interaction Module.

Each panel embeds the 4CH and SAX cine features of the same subjects together (sklearn TSNE), colours points by
sequence, marks them by class, and draws a dashed mean +/- sd ellipse per (sequence, class) group. After phase 2
the two sequences' clouds should move together while the classes move apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.datasets import task_dataset
from cccmr_model.engine.evaluate import eval_loader, eval_model
from cccmr_model.engine.loading import resolve_device, to_device
from cccmr_model.metrics import SUBTYPE_NAMES
from cccmr_model.sequences import CINE_SEQUENCES

SEQUENCE_LABELS = {"cine_4ch": "4CH cine", "cine_sax": "SAX cine"}
SEQUENCE_COLOURS = {"cine_4ch": "tab:blue", "cine_sax": "tab:orange"}
CLASS_MARKERS = ("o", "^", "s", "D", "v")
CLASS_LINES = ("--", ":", "-.", (0, (5, 1)), (0, (1, 3)))  # contour line style per class


def cine_embeddings(
    state: Mapping[str, Tensor], dataset: Dataset, config: ExperimentConfig, device: str = "cpu"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per cine sequence the pooled encoder features (N, D) of `dataset` (no augmentation), and the labels (N,)."""
    data = task_dataset(dataset, config.task)
    dev = resolve_device(device)
    prefixes = tuple(f"encoders.{seq}." for seq in CINE_SEQUENCES)
    model = eval_model(state, config, dev, prefixes)
    feats: dict[str, list[Tensor]] = {seq: [] for seq in CINE_SEQUENCES}
    labels = []
    with torch.inference_mode():
        for batch in eval_loader(data, config, dev):
            batch = to_device(batch, dev)
            for seq in CINE_SEQUENCES:
                feats[seq].append(model.encode(seq, batch[seq]).float().cpu())  # B, D
            labels.append(batch["label"].cpu())
    return {seq: torch.cat(v).numpy() for seq, v in feats.items()}, torch.cat(labels).numpy()


def tsne_2d(features: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Joint 2-D t-SNE of the sequences' features (rows standardised); perplexity capped for small cohorts."""
    from sklearn.manifold import TSNE

    stacked = np.concatenate([features[seq] for seq in CINE_SEQUENCES])  # 2N, D
    stacked = (stacked - stacked.mean(0)) / (stacked.std(0) + 1e-6)
    perplexity = float(min(30.0, max(2.0, (len(stacked) - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(stacked)
    n = len(features[CINE_SEQUENCES[0]])
    return {seq: points[i * n : (i + 1) * n] for i, seq in enumerate(CINE_SEQUENCES)}


def _class_name(task: str, cls: int) -> str:
    if task == "subtyping":
        return SUBTYPE_NAMES[cls]
    return ("healthy", "cardiomyopathy")[cls]


def _panel(ax, points: Mapping[str, np.ndarray], labels: np.ndarray, task: str, title: str) -> None:
    from matplotlib.patches import Ellipse

    for seq in CINE_SEQUENCES:
        for cls in np.unique(labels):
            xy = points[seq][labels == cls]
            marker = CLASS_MARKERS[int(cls) % len(CLASS_MARKERS)]
            name = f"{SEQUENCE_LABELS[seq]}, {_class_name(task, int(cls))}"
            ax.scatter(xy[:, 0], xy[:, 1], s=14, c=SEQUENCE_COLOURS[seq], marker=marker, alpha=0.7, label=name)
            mean, sd = xy.mean(axis=0), xy.std(axis=0)
            ax.add_patch(
                Ellipse(
                    mean,
                    2 * sd[0],
                    2 * sd[1],
                    fill=False,
                    ls=CLASS_LINES[int(cls) % len(CLASS_LINES)],
                    lw=1.2,
                    ec=SEQUENCE_COLOURS[seq],
                )
            )  # mean +/- sd
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def tsne_figure(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    labels: np.ndarray,
    path: str | Path,
    *,
    task: str = "screening",
    seed: int = 0,
) -> Path:
    """Write the two-panel PNG (before / after the FIM) of cine features `before` and `after` of the same subjects."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    _panel(axes[0], tsne_2d(before, seed), labels, task, "Before Feature Interaction Module")
    _panel(axes[1], tsne_2d(after, seed), labels, task, "After Feature Interaction Module")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return out


def write_fig3(
    state_before: Mapping[str, Tensor],
    state_after: Mapping[str, Tensor],
    dataset: Dataset,
    config: ExperimentConfig,
    path: str | Path,
    device: str = "cpu",
) -> Path:
    """Fig. 3 for `dataset`: embeddings after phase 1 (`state_before`) and after phase 2 (`state_after`)."""
    before, labels = cine_embeddings(state_before, dataset, config, device)
    after, _ = cine_embeddings(state_after, dataset, config, device)
    return tsne_figure(before, after, labels, path, task=config.task, seed=config.seed)
