"""Training-step speed and memory of `cccmr_model.swin3d.swin3d_tiny` against torchvision's `swin3d_t`.

Both models get the same random weights (torchvision's, loaded with `load_pretrained`) and the same input, in
train mode with stochastic depth off (so the two steps compute the same function and their outputs and gradients
can be compared). Times are the median of `reps` interleaved steps (torchvision, ours, torchvision, ...), so load
from other processes hits both alike; on the CPU both wall time and process CPU time are reported (CPU time is
the steadier figure on a shared machine).

Peak memory of one training step, gradient checkpointing off vs on, is measured in a fresh subprocess each:
on the CPU as the rise of the peak resident set size (`VmHWM`) over the resident size just before the step,
with glibc's mmap threshold fixed at 128 KiB (`MALLOC_MMAP_THRESHOLD_`) so that every tensor buffer is its own
mapping, returned to the OS when freed: the resident size then follows the live tensors instead of the heap's
high-water mark (without it, freed buffers stay resident and both settings read about the same). On CUDA:
`torch.cuda.max_memory_allocated`. Both include the parameter gradients the step allocates.

    python -m benchmarks.encoder_speed               # CPU, both shapes
    python -m benchmarks.encoder_speed --quick       # CPU, the small shape only
    python -m benchmarks.encoder_speed --device cuda # bf16 autocast, achieved fraction of the bf16 matmul peak
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

SHAPES_CPU = [(2, 3, 16, 112, 112), (1, 3, 16, 224, 224)]
SHAPES_CUDA = [(8, 3, 16, 224, 224)]
# dense bf16 tensor-core peak (TFLOP/s) by device name fragment; override with --peak-tflops
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "4090": 165.0}


def build_pair(device: str) -> tuple[nn.Module, nn.Module]:
    """torchvision swin3d_t and our swin3d_tiny with the same random weights, stochastic depth off, train mode."""
    from torchvision.models.video import swin3d_t
    from torchvision.ops import StochasticDepth

    from cccmr_model.swin3d import load_pretrained, swin3d_tiny

    torch.manual_seed(0)
    ref = swin3d_t()
    ref.head = nn.Identity()
    for module in ref.modules():
        if isinstance(module, StochasticDepth):
            module.p = 0.0
    ours = swin3d_tiny(drop_path_rate=0.0)
    load_pretrained(ours, ref.state_dict())
    return ref.to(device).train(), ours.to(device).train()


def train_step(model: nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = model(x)
    y.float().square().mean().backward()
    return y.detach().float()


def eval_step(model: nn.Module, x: torch.Tensor, autocast: bool) -> torch.Tensor:
    """Inference (evaluation rounds, prediction): eval mode, no autograd."""
    model.eval()
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        y = model(x).float()
    model.train()
    return y


def _timed(fn: Callable[[], torch.Tensor], device: str) -> tuple[float, float, torch.Tensor]:
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _grad_diff(ref: nn.Module, ours: nn.Module) -> tuple[float, float]:
    """Largest absolute gradient difference over all parameters, and the largest relative one (difference over
    the largest magnitude of that parameter's reference gradient)."""
    from cccmr_model.swin3d_weights import _rename_torchvision

    ours_params = dict(ours.named_parameters())
    diffs = [
        ((p.grad - ours_params[_rename_torchvision(n)].grad).abs().max().item(), p.grad.abs().max().item())
        for n, p in ref.named_parameters()
        if p.grad is not None
    ]
    return max(d for d, _ in diffs), max(d / m for d, m in diffs if m > 0)


def train_flops(model: nn.Module, x: torch.Tensor, autocast: bool) -> float:
    """Matmul/conv/attention FLOPs of one forward + backward, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(model, x, autocast)
    return float(counter.get_total_flops())


def speed_rows(shape: tuple[int, ...], reps: int, device: str) -> list[dict]:
    """Interleaved training steps of both implementations at one input shape, then interleaved inference."""
    autocast = device == "cuda"
    ref, ours = build_pair(device)
    x = torch.randn(shape, device=device)
    for model in (ref, ours):  # warm-up: allocator, kernel selection, caches
        train_step(model, x, autocast)
    times: dict[str, list[tuple[float, float]]] = {"torchvision": [], "cccmr": []}
    for _ in range(reps):
        for name, model in (("torchvision", ref), ("cccmr", ours)):
            wall, cpu, _ = _timed(lambda m=model: train_step(m, x, autocast), device)
            times[name].append((wall, cpu))
    y_ref, y_ours = train_step(ref, x, autocast), train_step(ours, x, autocast)
    out_diff, (grad_diff, grad_rel) = (y_ref - y_ours).abs().max().item(), _grad_diff(ref, ours)
    flops = train_flops(ours, x, autocast)
    rows = []
    for name in times:
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        rows.append(
            dict(benchmark="encoder_speed", metric=f"train step {name} {device} {'x'.join(map(str, shape))}",
                 value=round(wall, 3), unit="s", impl=name, reps=reps, cpu_s=round(cpu, 3),
                 tflops=round(flops / wall / 1e12, 4), max_abs_diff_out=out_diff, max_abs_diff_grad=grad_diff,
                 max_rel_diff_grad=grad_rel)
        )  # fmt: skip
    base = rows[0]
    for row in rows:
        row["speedup_wall"] = round(base["value"] / row["value"], 3)
        row["speedup_cpu"] = round(base["cpu_s"] / row["cpu_s"], 3)
    if device == "cuda":
        peak = _bf16_peak_tflops()
        for row in rows:
            row["frac_bf16_peak"] = round(row["tflops"] / peak, 4) if peak else None
    return rows + inference_rows(ref, ours, x, reps, device)


def inference_rows(ref: nn.Module, ours: nn.Module, x: torch.Tensor, reps: int, device: str) -> list[dict]:
    autocast = device == "cuda"
    walls: dict[str, list[float]] = {"torchvision": [], "cccmr": []}
    outs = {}
    for _ in range(reps):
        for name, model in (("torchvision", ref), ("cccmr", ours)):
            wall, _, outs[name] = _timed(lambda m=model: eval_step(m, x, autocast), device)
            walls[name].append(wall)
    diff = (outs["torchvision"] - outs["cccmr"]).abs().max().item()
    base = statistics.median(walls["torchvision"])
    where = f"{device} {'x'.join(map(str, x.shape))}"
    return [
        dict(benchmark="encoder_speed", metric=f"inference {name} {where}", value=round(statistics.median(w), 3),
             unit="s", impl=name, reps=reps, speedup_wall=round(base / statistics.median(w), 3), max_abs_diff_out=diff)
        for name, w in walls.items()
    ]  # fmt: skip


def _bf16_peak_tflops() -> float | None:
    name = torch.cuda.get_device_name()
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    """This process's peak resident size (VmHWM; unlike `ru_maxrss` it does not inherit the parent's peak)."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB


def memory_probe(shape: tuple[int, ...], checkpointing: bool, device: str) -> int:
    """Peak memory (bytes) that one training step of our model adds; run in a fresh process."""
    _, ours = build_pair(device)
    ours.set_grad_checkpointing(checkpointing)
    x = torch.randn(shape, device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(ours, x, autocast=True)
        return torch.cuda.max_memory_allocated() - base
    base = _rss_bytes()
    train_step(ours, x, autocast=False)
    return _peak_rss_bytes() - base


def memory_rows(shape: tuple[int, ...], device: str) -> list[dict]:
    peaks = {}
    for ckpt in (False, True):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.encoder_speed",
            "--memory-probe",
            json.dumps([list(shape), ckpt, device]),
        ]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # freed tensors go back to the OS at once
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        peaks[ckpt] = int(out.strip().splitlines()[-1])
    where = f"{device} {'x'.join(map(str, shape))}"
    reduction = round(1 - peaks[True] / peaks[False], 3)
    return [
        dict(benchmark="encoder_speed", metric=f"train step peak memory, grad checkpointing {ckpt}, {where}",
             value=round(peaks[ckpt] / 2**20, 1), unit="MiB", reduction=reduction if ckpt else None)
        for ckpt in (False, True)
    ]  # fmt: skip


def run(quick: bool = False, device: str = "cpu", reps: int | None = None) -> list[dict]:
    """All benchmark rows; `quick` keeps the first shape only (for `python -m benchmarks`)."""
    shapes = SHAPES_CUDA if device == "cuda" else SHAPES_CPU
    shapes = shapes[:1] if quick else shapes
    rows: list[dict] = []
    for shape in shapes:
        rows += speed_rows(shape, reps or 5, device)
    rows += memory_rows(shapes[-1], device)
    return rows


def print_table(rows: list[dict]) -> None:
    columns = sorted({k for row in rows for k in row}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    table = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="first shape only")
    parser.add_argument("--reps", type=int, default=None, help="timed steps per implementation (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines instead of a table")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        shape, ckpt, device = json.loads(args.memory_probe)
        print(memory_probe(tuple(shape), ckpt, device))
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    rows = run(quick=args.quick, device=args.device, reps=args.reps)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
