"""`cccmr predict`: P(cardiomyopathy) and the call from a 4CH and a SAX cine series, with a release's model."""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cccmr_model.cli import check_writable_file, check_writable_folder
from cccmr_model.errors import CccmrError
from cccmr_model.runtime_options import PRECISIONS
from cccmr_model.sequences import CINE_4CH, CINE_SAX

if TYPE_CHECKING:  # the modules themselves import torch, so `run` imports them: not needed to build the parser
    from cccmr_model.predict import Prediction, SubjectHook, SubjectInputs
    from cccmr_model.release import Release

HELP = "screen a subject (or a manifest of subjects) from cine CMR alone with a published release"
log = logging.getLogger("cccmr.predict")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", required=True, type=Path, help="release folder (written by train or the server)")
    parser.add_argument("--cine-4ch", metavar="PATH", help="4-chamber cine series: folder or multi-frame file[#UID]")
    parser.add_argument("--cine-sax", metavar="PATH", help="short-axis cine series: folder or multi-frame file[#UID]")
    parser.add_argument(
        "--manifest", type=Path, help="CSV with subject_id,cine_4ch,cine_sax (paths relative to the CSV): batch mode"
    )
    parser.add_argument("--out", type=Path, help="batch mode: CSV of results, one row per subject")
    parser.add_argument("--json", action="store_true", help="print the single-subject result as JSON")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto",
        help="auto (default): bf16 autocast on CUDA, fp32 on the CPU; the saliency maps are always fp32",
    )  # fmt: skip
    parser.add_argument(
        "--explain", type=Path, metavar="DIR",
        help="write saliency overlays (HiResCAM; PNG at ED and ES, GIF over the cycle) and explanation.json"
        " (batch mode: one folder per subject)",
    )  # fmt: skip
    parser.add_argument(
        "--dicom-out", type=Path, metavar="DIR",
        help="write a DICOM result page (Secondary Capture) and Structured Report in the input's study"
        " (batch mode: one folder per subject)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    single = args.cine_4ch is not None or args.cine_sax is not None
    if single == (args.manifest is not None):
        raise CccmrError("give either --cine-4ch and --cine-sax, or --manifest and --out")
    if single and (args.cine_4ch is None or args.cine_sax is None):
        raise CccmrError("both --cine-4ch and --cine-sax are needed")
    if args.manifest is not None and args.out is None:
        raise CccmrError("--manifest needs --out (the results CSV)")
    if args.out is not None:
        check_writable_file(args.out, "--out")  # before any subject is scored, so no result is lost
    for option, folder in (("--explain", args.explain), ("--dicom-out", args.dicom_out)):
        if folder is not None:
            check_writable_folder(folder, option)
    from cccmr_model.predict import Predictor, predict_manifest, write_predictions
    from cccmr_model.release import load_release

    release = load_release(args.release)
    log.info("release %s (%s, %s), content hash %s", args.release, release.config.name, release.config.task,
             release.content_hash[:12])  # fmt: skip
    predictor = Predictor(release, args.device, args.precision)
    after = _outputs_hook(args, release)
    if single:
        inputs = predictor.read_subject(args.cine_4ch, args.cine_sax)
        prediction = predictor.predict_inputs(inputs)
        if after is not None:
            after("", inputs, prediction)
        print(_render(prediction, release.content_hash, display_orders(inputs, release), as_json=args.json))
        return 0
    rows = predict_manifest(predictor, args.manifest, after)
    write_predictions(args.out, rows, release.config)
    rejected = sum(row.prediction is None for row in rows)
    log.info("%d subject(s) scored, %d rejected; results in %s", len(rows) - rejected, rejected, args.out)
    if rejected:
        print(f"{rejected} of {len(rows)} subject(s) could not be scored; reasons in {args.out}")
        return 2
    return 0


def _render(prediction: Prediction, content_hash: str, orders: dict | None, *, as_json: bool) -> str:
    if as_json:
        out = {**prediction.to_dict(), "release_content_hash": content_hash, "display_order": orders}
        return json.dumps(out, indent=2, allow_nan=False)
    if prediction.task == "screening":
        return (
            f"P(cardiomyopathy): {prediction.p_cardiomyopathy:.4f}\n"
            f"call: {prediction.call} (threshold {prediction.threshold:g})"
        )
    lines = [f"{name}: {p:.4f}" for name, p in zip(prediction.class_names, prediction.probabilities, strict=True)]
    lines.append(f"most probable subtype: {prediction.call} (a subtyping release assumes a cardiomyopathy)")
    return "\n".join(lines)


def display_orders(inputs: SubjectInputs, release: Release) -> dict[str, dict[str, Any]] | None:
    """Per cine series, how the model's frames were reordered from the stored pixels: the sidecar's `DisplayOrder`
    fields and the same in words; None when the release scores the stored pixel order."""
    if not release.config.data.display_orientation:
        return None
    orders = {CINE_4CH: inputs.cine_4ch.display_order, CINE_SAX: inputs.cine_sax.display_order}
    return {seq: asdict(order) | {"described": order.describe()} for seq, order in orders.items()}


def frames_note(inputs: SubjectInputs, release: Release) -> str:
    """How the result page's frames relate to the stored series: the display order and what it took to get there."""
    orders = display_orders(inputs, release)
    if orders is None:
        return "in the scanner's stored pixel order"
    stored = f"SAX {orders[CINE_SAX]['described']}, 4CH {orders[CINE_4CH]['described']}"
    return f"standard display (SAX: RV left, inferior down; 4CH: apex up); from the stored series: {stored}"


def _outputs_hook(args: argparse.Namespace, release: Release) -> SubjectHook | None:
    """What --explain and --dicom-out write for each scored subject ("" = single mode: the folder itself)."""
    if args.explain is None and args.dicom_out is None:
        return None
    from cccmr_model.explain import explain_subject
    from cccmr_model.result_dicom import release_id, write_dicom_result

    identity = release_id(release.manifest)

    def after(subject: str, inputs: SubjectInputs, prediction: Prediction) -> None:
        with tempfile.TemporaryDirectory(prefix="cccmr-explain-") as scratch:
            folder = (args.explain / subject) if args.explain is not None else Path(scratch)
            explain_subject(release.model, inputs, prediction, folder)
            if args.dicom_out is not None:
                pictures = [folder / f"{seq}_{phase}.png" for seq in (CINE_SAX, CINE_4CH) for phase in ("ed", "es")]
                shown = dict(zip(prediction.class_names, prediction.probabilities, strict=True))
                if prediction.task == "screening":
                    shown = {"cardiomyopathy": shown["cardiomyopathy"]}
                threshold = prediction.threshold if prediction.task == "screening" else None
                write_dicom_result(args.dicom_out / subject, inputs.sources, shown, prediction.call, threshold,
                                   identity, pictures, frames_note(inputs, release))  # fmt: skip
        log.info("%s: outputs written", subject or "subject")

    return after
