"""Saliency overlays: PNGs at end-diastole and end-systole, an animated GIF over the cycle, and a JSON summary.

Frames are the model's input frames (the release's preprocessing: reordered to the standard display, cropped around
the heart, resampled to a fixed count over one cycle, z-scored). End-diastole is frame 0 (the cycle starts at the R
wave); end-systole is the frame where the bright blood pool in the middle of the mid SAX slice is smallest, and is
used for the 4CH too (both are resampled to the same phases of the cycle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from cccmr_model.explain.saliency import METHOD, Saliency
from cccmr_model.sequences import CINE_SAX

ALPHA = 0.5  # overlay opacity at the map's peak
MIN_SIDE = 256  # each slice is shown at least this many pixels high
BAR = 16  # height of the caption bar
GIF_MS = 100  # per frame


def end_systole(cine_sax: np.ndarray) -> int:
    """The frame (of S, T, H, W) whose central bright blood pool in the mid slice is smallest."""
    mid = cine_sax[cine_sax.shape[0] // 2]  # T, H, W
    _, rows, cols = mid.shape
    yy, xx = np.mgrid[:rows, :cols]
    centre = np.hypot(yy - (rows - 1) / 2, xx - (cols - 1) / 2) < min(rows, cols) / 4  # H, W
    bright = (mid > 1.0) & centre  # T, H, W
    return int(np.argmin(bright.sum(axis=(1, 2))))


def _grey(images: np.ndarray) -> np.ndarray:
    """(..., H, W) z-scored images -> [0, 1] over their 1st-99th percentile."""
    low, high = np.percentile(images, (1, 99))
    return np.clip((images - low) / max(high - low, 1e-6), 0, 1)


def overlay(images: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Slices (S, H, W) in [0, 1] with a map (H, W) in [0, 1] -> one RGB row (H, S*W, 3) uint8."""
    from matplotlib import colormaps

    heat = colormaps["inferno"](cam)[..., :3]  # H, W, 3
    alpha = ALPHA * cam[..., None]  # H, W, 1
    tiles = [(1 - alpha) * image[..., None] + alpha * heat for image in images]  # S x (H, W, 3)
    return (np.concatenate(tiles, axis=1) * 255).round().astype(np.uint8)  # H, S*W, 3


def _picture(rgb: np.ndarray, caption: str) -> Image.Image:
    scale = max(1, -(-MIN_SIDE // rgb.shape[0]))
    image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)
    page = Image.new("RGB", (image.width, image.height + BAR), "black")
    page.paste(image, (0, BAR))
    ImageDraw.Draw(page).text((4, 2), caption, fill="white")
    return page


def frame_picture(seq: str, frames: np.ndarray, cam: np.ndarray, frame: int, label: str) -> Image.Image:
    """One frame of a sequence (S, T, H, W) with its map (T, H, W), slices side by side, captioned."""
    grey = _grey(frames)
    return _picture(overlay(grey[:, frame], cam[frame]), f"{seq} {label} frame {frame}: HiResCAM")


def write_overlays(out: Path, inputs: dict[str, np.ndarray], saliency: Saliency, es_frame: int) -> list[Path]:
    """PNG at ED (frame 0) and ES, and an animated GIF, per sequence; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seq, item in saliency.sequences.items():
        frames = inputs[seq]  # S, T, H, W
        for label, frame in (("ED", 0), ("ES", es_frame)):
            path = out / f"{seq}_{label.lower()}.png"
            frame_picture(seq, frames, item.cam, frame, label).save(path)
            written.append(path)
        grey = _grey(frames)
        loop = [
            _picture(overlay(grey[:, t], item.cam[t]), f"{seq} frame {t}: HiResCAM") for t in range(frames.shape[1])
        ]
        path = out / f"{seq}.gif"
        loop[0].save(path, save_all=True, append_images=loop[1:], duration=GIF_MS, loop=0)
        written.append(path)
    return written


def summary(
    saliency: Saliency, frame_times: dict[str, Sequence[Sequence[float | None]]], slice_indices: dict[str, list[int]]
) -> dict[str, Any]:
    """What weighs most, per sequence: frames (with ms after the R wave) and slices (series slice numbers)."""
    out: dict[str, Any] = {
        "method": METHOD,
        "explained_class": saliency.target_name,
        "probability_of_explained_class": round(saliency.probability, 6),
        "sequences": {},
    }
    for seq, item in saliency.sequences.items():
        times = frame_times[seq][len(frame_times[seq]) // 2]
        entry: dict[str, Any] = {
            "top_frames": [
                {"frame": f, "ms_after_r": times[f], "share": round(float(item.frame_weights[f]), 4)}
                for f in item.top_frames
            ],
            "frame_share": [round(float(w), 4) for w in item.frame_weights],
        }
        if seq == CINE_SAX:
            entry["top_slices"] = [
                {
                    "input_slice": s,
                    "series_slice": slice_indices[seq][s],
                    "probability_drop_when_blanked": round(float(item.slice_weights[s]), 6),
                }
                for s in item.top_slices
            ]
        out["sequences"][seq] = entry
    return out


def write_explanation(
    out: Path,
    inputs: dict[str, np.ndarray],
    saliency: Saliency,
    frame_times: dict[str, Sequence[Sequence[float | None]]],
    slice_indices: dict[str, list[int]],
) -> dict[str, Any]:
    """Overlays and `explanation.json` (no patient identifiers) in `out`; returns the summary."""
    es = end_systole(inputs[CINE_SAX])
    files = write_overlays(out, inputs, saliency, es)
    data = {**summary(saliency, frame_times, slice_indices), "ed_frame": 0, "es_frame": es}
    data["files"] = sorted(p.name for p in files)
    (out / "explanation.json").write_text(json.dumps(data, indent=1) + "\n")
    return data
