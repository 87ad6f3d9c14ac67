"""The ``export`` command: its options, and a run of it for the command line.

The work is :func:`unet_tf.export.export_model` and :func:`unet_tf.export.check_exports`
(SavedModel, TFLite, ONNX) and :func:`unet_tf.modelzoo.export_package` (a bioimage.io
model package, ``--format bioimageio``); :mod:`unet_tf.cli` builds the parser.
"""

import argparse
import sys
from pathlib import Path

from unet_tf import config, decoding, files
from unet_tf.export import (
    FORMATS,
    PACKAGE,
    calibration_crops,
    check_exports,
    export_model,
    format_table,
    load_exported,
    validation_scores,
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``export`` that no other command has (see :mod:`unet_tf.cli`)."""
    parser.add_argument(
        "-o", "--output", type=Path, help="output folder (default: models/export/<model name>)"
    )
    parser.add_argument(
        "--formats",
        "--format",
        default=",".join(FORMATS),
        help=f"comma-separated formats (default: all of {','.join(FORMATS)}); "
        "'bioimageio' writes a bioimage.io model package instead (see unet_tf.modelzoo)",
    )
    parser.add_argument(
        "--test-image",
        type=Path,
        help="bioimageio: image for the package's test input and cover "
        "(default: a validation image where the data are unpacked, else synthetic discs)",
    )
    parser.add_argument(
        "--check-size", type=int, default=256, help="side of the images the exports are checked on"
    )
    parser.add_argument(
        "--dsb-images",
        type=int,
        default=0,
        help="validation images for the DSB score per format (0: all 80; -1: skip the score)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``export``; returns 0 if every export is within tolerance, 1 if not, 2 on errors."""
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    unknown = sorted(set(formats) - {*FORMATS, PACKAGE})
    if unknown or not formats:
        choices = [*FORMATS, PACKAGE]
        print(f"error: unknown formats {unknown}; choose from {choices}", file=sys.stderr)
        return 2
    if PACKAGE in formats:
        status = _package(args)
        formats = [name for name in formats if name != PACKAGE]
        if not formats or status == 2:
            return status
    else:
        status = 0
    from unet_tf import inference, trained
    from unet_tf.model import model_channels, model_depth

    net = trained.load_model(args.model)
    depth = model_depth(net)
    output_dir = args.output or config.MODELS_DIR / "export" / args.model.stem
    try:
        channels, multiple = model_channels(net), 2**depth
        representative = []
        if "tflite_int8" in formats:
            representative = calibration_crops(multiple=multiple, channels=channels)
        samples = calibration_crops(
            count=4, size=args.check_size, seed=1, multiple=multiple, channels=channels
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error} (the checks use training images; run `make data`)", file=sys.stderr)
        return 2
    try:
        paths = export_model(
            net, output_dir, formats, representative, args.model.stem, overwrite=args.overwrite
        )
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = check_exports(net, paths, samples)
    scores = None
    if args.dsb_images >= 0:
        try:
            settings = inference.read_settings(args.model)
        except FileNotFoundError as error:
            print(f"note: no DSB scores: {error}", file=sys.stderr)
        else:
            models = {fmt: load_exported(fmt, path, depth, channels) for fmt, path in paths.items()}
            scores = validation_scores(models, settings, max_images=args.dsb_images)
    print(format_table(rows, scores))
    files.write_json(
        output_dir / "export.json",
        {"model": args.model.name, "checks": rows, "validation_dsb": scores},
    )
    print(f"exports and export.json in {output_dir}")
    return max(status, 0 if all(row["within_tolerance"] for row in rows) else 1)


def _package(args: argparse.Namespace) -> int:
    """``python -m unet_tf export --format bioimageio``: write, validate and test a package.

    Returns 0 when the package is valid and its model test passes (or cannot run here),
    1 when the model test fails, 2 on errors (missing files, an existing package).
    """
    # TensorFlow loads with the package code, so only when a package is asked for.
    from unet_tf import modelzoo

    try:
        image = (
            decoding.read_image(args.test_image)
            if args.test_image
            else modelzoo.default_test_image()
        )
        paths = modelzoo.export_package(
            args.model, args.output, image=image, overwrite=args.overwrite
        )
        status = modelzoo.validate_package(paths["zip"])
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    tested = modelzoo.test_package(paths["zip"])
    size = paths["zip"].stat().st_size / 1e6
    print(f"bioimage.io package: {paths['zip']} ({size:.1f} MB), folder {paths['folder']}")
    print(f"bioimageio.spec validation: {status}")
    print(f"bioimageio.core model test: {tested['status']}")
    for check in tested["checks"]:
        if check["status"] != "passed":
            print(f"  {check['status']}: {check['name']}")
    files.write_json(
        paths["folder"].parent / "bioimageio.json",
        {"package": paths["zip"].name, "size_mb": round(size, 2), "validation": status, **tested},
    )
    return 1 if tested["status"] == "failed" else 0
