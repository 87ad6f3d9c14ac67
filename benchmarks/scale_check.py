"""Scale check: the validation images at other magnifications, segmented as ``predict`` does.

Every validation image is resampled by each factor (bilinear for the image, nearest
neighbour for its labels), segmented with the model's tuned settings, with the automatic
rescaling to the training nucleus size and without it, and scored with the DSB metric. A
model that works at any magnification scores about the same at every factor. Writes
``reports/scale_check.json`` and prints a Markdown table::

    .venv/bin/python benchmarks/scale_check.py [--model models/unet.keras] [--max-images 0]

``--quick`` is a smoke run (the tests use it): as many validation images as the smoke
profile takes (``notebooks/profiles/smoke.json``), at half and double size, without TTA,
into ``reports/scale_check-quick.json``.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from unet_tf import config, evaluation, files, inference, predict, report

FACTORS = (0.5, 1.0, 2.0, 4.0)
QUICK_FACTORS = (0.5, 2.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=config.MODELS_DIR / "unet.keras")
    parser.add_argument(
        "--max-images", type=int, help="validation images (default all, or the smoke's)"
    )
    parser.add_argument(
        "--factors", type=float, nargs="*", help=f"default {FACTORS}, quick {QUICK_FACTORS}"
    )
    parser.add_argument("--no-tta", action="store_true", help="skip test-time augmentation")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few images, two factors, no TTA"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.no_tta = True
    if args.factors is None:
        args.factors = list(QUICK_FACTORS if args.quick else FACTORS)
    if args.max_images is None:
        args.max_images = report.training_config("smoke").max_images if args.quick else 0

    net, settings, _ = predict.load_model_and_settings(args.model)
    if not settings.get("nucleus_diameter"):
        print(f"error: {args.model} has no training nucleus size to rescale to", file=sys.stderr)
        return 2
    if args.no_tta:
        settings["tta"] = False
    samples = evaluation.validation_samples(args.max_images)
    kinds = evaluation.imaging_types(samples)
    rows = []
    for factor in args.factors:
        scores = {True: [], False: []}
        # One image at a time: 4x the largest validation images is hundreds of megabytes.
        for sample in samples:
            (scaled,) = inference.resample_samples([sample], factor)
            image = scaled[1]
            # Without TTA the plain pass is both the answer without rescaling and the first
            # pass of the size estimate, as predict uses it.
            plain = inference.predict_full(net, image, tile_size=settings["tile_size"])
            if settings["tta"]:
                unscaled, _ = inference.predict(net, image, settings, scale=1.0)
            else:
                unscaled = plain
            scale = inference.estimate_scale(
                net,
                image,
                settings["nucleus_diameter"],
                settings["tile_size"],
                first_output=plain,
            )
            rescaled = (
                unscaled if scale == 1.0 else inference.predict(net, image, settings, scale)[0]
            )
            for rescale, output, used in ((True, rescaled, scale), (False, unscaled, 1.0)):
                scores[rescale].append(
                    evaluation.score([scaled], [output], settings["postprocess"], kinds, [used])
                )
        row = {"factor": factor}
        for rescale in (True, False):
            frame = pd.concat(scores[rescale], ignore_index=True)
            name = "automatic scale" if rescale else "no rescaling"
            row[f"DSB, {name}"] = float(frame.dsb_score.mean())
            for kind, value in frame.groupby("imaging_type").dsb_score.mean().items():
                row[f"{kind}, {name}"] = float(value)
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    print(evaluation.markdown_table(table))
    files.write_json(
        config.REPORTS_DIR / ("scale_check-quick.json" if args.quick else "scale_check.json"),
        {"model": args.model.name, "images": len(samples), "tta": settings["tta"], "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
