"""CPU time of one subject's saliency map (`cccmr predict --explain`) at the default size, against a prediction.

The cine-only model of `configs/default.yaml` (Swin3D-T encoders, 16 frames of 224 x 224; random weights: the
cost does not depend on them) on one subject's preprocessed inputs. Timed, median of `reps`:

- `predict`: the prediction alone (no autograd), the floor a saliency map is measured against;
- `saliency map`: the HiResCAM maps of both cine sequences (what the overlays show);
- `saliency + slice ablation`: the above plus the three-slice SAX ablation (what `--explain` runs);
- `overlays`: writing the PNGs, GIFs and explanation.json.

Wall time and process CPU time are both reported (CPU time divided by threads is the steadier figure on a shared
machine). `--quick` uses the tiny config instead.

    python -m benchmarks.explain_speed                # default size, all cores
    python -m benchmarks.explain_speed --threads 1    # one core
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

BENCHMARK = "explain_speed"


def _timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `reps` calls (after one warm-up call)."""
    fn()
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(config_name: str, reps: int) -> list[dict]:
    """Rows of the benchmark table for one config."""
    from cccmr_model.config import load_config
    from cccmr_model.explain.overlays import write_explanation
    from cccmr_model.explain.saliency import explain_arrays
    from cccmr_model.model import build_model

    config = load_config(config_name)
    torch.manual_seed(0)
    model = build_model(config, with_lge=False).eval()
    frames, size = config.data.frames, config.data.image_size
    rng = np.random.default_rng(0)
    four = rng.normal(size=(1, frames, size, size)).astype(np.float32)  # S, T, H, W
    sax = rng.normal(size=(3, frames, size, size)).astype(np.float32)
    x4, xs = torch.from_numpy(four)[None], torch.from_numpy(sax)[None]  # 1, S, T, H, W

    def predict() -> object:
        with torch.no_grad():
            return model.predict(x4, xs)

    saliency = explain_arrays(model, four, sax, 1, "cardiomyopathy")
    times: list[tuple[str, Callable[[], object]]] = [("predict", predict)]
    times.append(("saliency map", lambda: explain_arrays(model, four, sax, 1, "cardiomyopathy", slices=False)))
    times.append(("saliency + slice ablation", lambda: explain_arrays(model, four, sax, 1, "cardiomyopathy")))
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        times_ms = [[float(t) for t in range(frames)]] * 3

        def write() -> object:
            arrays, slices = {"cine_4ch": four, "cine_sax": sax}, {"cine_4ch": [0], "cine_sax": [0, 1, 2]}
            return write_explanation(out, arrays, saliency, {"cine_4ch": times_ms[:1], "cine_sax": times_ms}, slices)

        times.append(("overlays", write))
        shape = f"{config_name}: 4CH (1, 1, {frames}, {size}, {size}), SAX (1, 3, {frames}, {size}, {size})"
        rows = []
        for metric, fn in times:
            wall, cpu = _timed(fn, reps)
            rows.append({"benchmark": BENCHMARK, "metric": f"{metric} wall", "value": round(wall, 3), "unit": "s",
                         "note": f"{shape}; CPU time {cpu:.2f} s; {torch.get_num_threads()} thread(s)"})  # fmt: skip
    return rows


def run(quick: bool = False) -> list[dict]:
    """The default size (the tiny config with `quick`), median of 3 (5 with `quick`)."""
    return measure("tiny" if quick else "default", reps=5 if quick else 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tiny config")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reps", type=int, default=0, help="timed repetitions (default: 3, 5 with --quick)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (5 if args.quick else 3)
    for row in measure("tiny" if args.quick else "default", reps):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
