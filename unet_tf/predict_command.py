"""The ``predict`` command: its options, and a run of it for the command line.

The work is :func:`unet_tf.predict.predict_images`; this module turns the options into its
arguments, refuses what cannot be done in one line (exit status 2), stops cleanly on
SIGINT and SIGTERM (130, 143: ``--resume`` continues), and reports what was done and
skipped (1 when an input was skipped). :mod:`unet_tf.cli` builds the parser.
"""

import argparse
import os
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from unet_tf import interrupt, journal
from unet_tf.predict import (
    EXTRAS,
    Outcome,
    PredictOptions,
    find_inputs,
    planned_outputs,
    predict_images,
)
from unet_tf.trained import load_model_and_settings


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``predict`` that no other command has (see :mod:`unet_tf.cli`)."""
    parser.add_argument("inputs", nargs="+", help="image files (PNG, TIFF, JPEG) or folders")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--pixel-size", type=float, help="micrometres per pixel; adds areas in square micrometres"
    )
    parser.add_argument("--format", choices=("tif", "png"), default="tif", dest="label_format")
    parser.add_argument("--recursive", action="store_true", help="also look in subfolders")
    parser.add_argument(
        "--rois", action="store_true", help="also write <name>_rois.zip: ImageJ ROIs for Fiji"
    )
    parser.add_argument(
        "--geojson", action="store_true", help="also write <name>.geojson: polygons for QuPath"
    )
    parser.add_argument(
        "--block-size",
        type=int,
        help="segment images larger than this in blocks of this side, with bounded memory "
        "(default: 2048 for images of more than 4096x4096 pixels; 0: never)",
    )
    stack = parser.add_argument_group("stacks and channels (TIFF files with Z, T or C axes)")
    stack.add_argument(
        "--channel", type=int, help="the channel holding the nuclei, from 0 (needed with several)"
    )
    choice = stack.add_mutually_exclusive_group()
    choice.add_argument("--plane", type=int, help="segment only this plane of a stack, from 0")
    choice.add_argument(
        "--max-projection", action="store_true", help="segment the maximum projection of a stack"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run into the same output folder: the images it finished are "
        "kept, the others predicted (same model, settings and options only)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``predict``; returns 0 on success, 1 if inputs were skipped, 2 on bad arguments,
    and 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) when stopped, saying how to continue."""
    with interrupt.stop_on_signals():
        try:
            return _run(args)
        except interrupt.Stopped as stop:
            if hasattr(stop, "finished"):
                print(
                    f"stopped by {stop.name}: {stop.finished} of {stop.total} images done, "
                    f"their rows in {args.output}/nuclei.csv and summary.csv; the same "
                    "command with --resume does the rest",
                    file=sys.stderr,
                )
            else:
                print(f"stopped by {stop.name} before any image was done", file=sys.stderr)
            return stop.exit_status


def _run(args: argparse.Namespace) -> int:
    from unet_tf import inference, quality

    try:
        options = PredictOptions(
            pixel_size=args.pixel_size,
            label_format=args.label_format,
            channel=args.channel,
            plane=args.plane,
            max_projection=args.max_projection,
            extras=tuple(name for name in EXTRAS if getattr(args, name)),
            block_size=args.block_size,
        )
        if args.resume and args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if args.output.exists() and not args.output.is_dir():
            raise ValueError(f"{args.output}: is a file, not a folder; choose another -o")
        paths, passed_over = find_inputs(args.inputs, recursive=args.recursive)
        _check_existing_outputs(paths, args, options)
        net, settings, tuned = load_model_and_settings(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not tuned:
        print(
            f"note: {inference.settings_path(args.model).name} not found; using untuned "
            f"settings {settings['postprocess']}",
            file=sys.stderr,
        )
    apply_inference_options(settings, args)
    try:
        inference.check_tile_size(net, settings["tile_size"])
    except ValueError as error:
        print(f"error: the tile size does not suit this model: {error}", file=sys.stderr)
        return 2
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        if not os.access(args.output, os.W_OK):
            raise PermissionError(f"{args.output}: the folder is not writable")
    except OSError as error:
        print(f"error: cannot write the outputs into {args.output} ({error})", file=sys.stderr)
        return 2
    estimate = _quality_estimate(args.model, settings["tta"])
    # What the outputs are made with: a run continues only with the same.
    identity = {
        "model_sha256": journal.file_checksum(args.model),
        "settings": settings,
        "options": asdict(options),
        "quality_sha256": journal.file_checksum(quality.quality_path(args.model))
        if estimate
        else None,
    }
    try:
        record = journal.Journal.start(args.output, identity, resume=args.resume)
        outcome = predict_images(
            net, paths, record, settings, options, progress=not args.quiet, estimate=estimate
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _report(outcome, passed_over, len(paths) + len(passed_over), args.output)


def _quality_estimate(model_path: Path, tta: bool):
    """The quality estimate beside the model, or None, saying what that means."""
    from unet_tf import quality

    path = quality.quality_path(model_path)
    try:
        estimate = quality.QualityModel.load(path)
    except FileNotFoundError:
        print(
            f"note: {path.name} not found, so no confidence, expected_dsb or reliable columns "
            "(benchmarks/quality_check.py fits one for a model)",
            file=sys.stderr,
        )
        return None
    except ValueError as error:
        print(f"note: {error}; no quality columns", file=sys.stderr)
        return None
    if not tta:
        print(
            "note: without TTA the quality estimate goes without the disagreement of the views",
            file=sys.stderr,
        )
    return estimate


def _check_existing_outputs(paths, args, options) -> None:
    """Refuse to overwrite outputs unless asked to, or to continue outputs without a record.

    Raises
    ------
    ValueError
        If outputs exist without ``--overwrite`` or ``--resume``, or with ``--resume`` but
        without the record of the run that wrote them.
    """
    planned = planned_outputs(paths, args.output, options.label_format, options.extras)
    existing = [path for path in [*planned, args.output / journal.FOLDER] if path.exists()]
    if not existing or args.overwrite:
        return
    shown = ", ".join(str(path) for path in existing[:3]) + (" ..." if len(existing) > 3 else "")
    if not args.resume:
        raise ValueError(
            f"{len(existing)} outputs exist already ({shown}); use --resume to continue the run "
            "that wrote them, --overwrite to replace them, or another --output"
        )
    if not (args.output / journal.FOLDER / "run.json").is_file():
        raise ValueError(
            f"{args.output}: outputs exist ({shown}) but no record of the run that wrote them "
            f"({journal.FOLDER}/run.json), so it cannot be continued; use --overwrite"
        )


def _report(outcome: Outcome, passed_over, inputs: int, output: Path) -> int:
    """Say what was done and skipped; the exit status (1 if any input was skipped)."""
    earlier = f" ({outcome.reused} of them by the run continued)" if outcome.reused else ""
    print(f"{len(outcome.finished)} images{earlier}, {outcome.nuclei} nuclei -> {output}")
    summary_path = output / "summary.csv"
    summary = pd.read_csv(summary_path) if summary_path.stat().st_size > 1 else pd.DataFrame()
    # "False" only: images segmented in blocks are not assessed (an empty cell).
    doubtful = summary[summary.reliable.astype(str) == "False"] if "reliable" in summary else []
    if len(doubtful):
        names = [
            f"{name}" + (f" (plane {plane})" if (summary.image == name).sum() > 1 else "")
            for name, plane in zip(doubtful.image, doubtful.plane, strict=True)
        ]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        print(
            f"{len(names)} of {len(summary)} images look unreliable (expected DSB below the "
            f"threshold; check them by eye): {shown}"
        )
    skipped = [*passed_over, *outcome.skipped]
    for _, reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} of {inputs} images skipped", file=sys.stderr)
    return 1 if skipped else 0


def apply_inference_options(settings: dict, args: argparse.Namespace) -> dict:
    """Apply ``--no-tta``, ``--tile-size``, ``--no-rescale`` and ``--nucleus-diameter``.

    Raises
    ------
    ValueError
        If ``--nucleus-diameter`` is not positive, is given with ``--no-rescale``, or the
        model does not record the nucleus size it was trained on.
    """
    if args.no_tta:
        settings["tta"] = False
    if args.tile_size:
        settings["tile_size"] = args.tile_size
    if args.no_rescale:
        settings["rescale"] = False
    if args.nucleus_diameter is not None:
        if not args.nucleus_diameter > 0 or args.no_rescale:
            raise ValueError("--nucleus-diameter must be positive, and not given with --no-rescale")
        if not settings.get("nucleus_diameter"):
            raise ValueError(
                "--nucleus-diameter needs a model that records the nucleus size it was trained "
                "on (trained and tuned by this version: make report)"
            )
        settings.update(rescale=True, image_nucleus_diameter=args.nucleus_diameter)
    return settings
