"""Scale check: the validation images at other magnifications, segmented as ``predict`` does.

Every validation image is resampled by each factor (bilinear for the image, nearest
neighbour for its labels), segmented with the model's tuned settings, with the automatic
rescaling to the training nucleus size and without it, and scored with the DSB metric. A
model that works at any magnification scores about the same at every factor. It also
says how often the size estimate is right: the share of images whose automatic scale lies
within a factor 1.3 of the one their labels give (the factor that brings their median
inscribed nucleus diameter to the training size). Writes ``reports/scale_check.json`` and
prints a Markdown table::

    .venv/bin/python benchmarks/scale_check.py [--model models/unet.keras] [--max-images 0]

``--groups`` checks whole sources of stage1_train instead of the validation split (as
``benchmarks/generalization.py`` names them, e.g. ``"stained 320x256"``): with a model of
that benchmark, trained without them, the images are ones the model never saw.

``--quick`` is a smoke run (the tests use it): as many validation images as the smoke
profile takes (``notebooks/profiles/smoke.json``), at half and double size, without TTA,
into ``reports/scale_check-quick.json``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from generalization import source_groups

from unet_tf import config, data, evaluation, files, inference, report, trained

FACTORS = (0.5, 1.0, 2.0, 4.0, 6.0)
QUICK_FACTORS = (0.5, 2.0)
# An estimated scale within this factor of the true one counts as right.
SIZE_TOLERANCE = 1.3


def size_right(scale: float, labels: np.ndarray, nucleus_diameter: float) -> bool | None:
    """Whether ``scale`` lies within ``SIZE_TOLERANCE`` of the factor that brings the median
    inscribed diameter of ``labels`` to ``nucleus_diameter``; None without nuclei."""
    diameter = inference.median_diameter(labels)
    if not diameter:
        return None
    ratio = scale * diameter / nucleus_diameter
    return bool(1 / SIZE_TOLERANCE <= ratio <= SIZE_TOLERANCE)


def group_samples(groups: list[str], max_images: int) -> list:
    """The labelled images of the named sources of stage1_train (``"stained 320x256"``)."""
    index = data.build_index(config.TRAIN_DIR, with_labels=False)
    index["group"] = source_groups(index)
    unknown = sorted(set(groups) - set(index.group))
    if unknown:
        raise ValueError(f"no such groups {unknown}; known: {sorted(set(index.group))}")
    chosen = index[index.group.isin(groups)]
    if max_images:
        chosen = chosen.groupby("group").head(max_images)
    return data.load_samples(
        config.TRAIN_DIR, ids=list(chosen.image_id), cache_dir=config.LABEL_CACHE
    )


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
        "--groups",
        nargs="+",
        help="sources of stage1_train to check instead of the validation split "
        '(e.g. "stained 320x256"; --max-images then counts per source)',
    )
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

    net, settings, _ = trained.load_model_and_settings(args.model)
    if not settings.get("nucleus_diameter"):
        print(f"error: {args.model} has no training nucleus size to rescale to", file=sys.stderr)
        return 2
    if args.no_tta:
        settings["tta"] = False
    if args.groups:
        try:
            samples = group_samples(args.groups, args.max_images)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        samples = evaluation.validation_samples(args.max_images)
    kinds = evaluation.imaging_types(samples)
    rows = []
    for factor in args.factors:
        scores = {True: [], False: []}
        sizes = []
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
            right = size_right(scale, scaled[2], settings["nucleus_diameter"])
            if right is not None:
                sizes.append({"imaging_type": kinds[scaled[0]], "right": right})
            rescaled = (
                unscaled if scale == 1.0 else inference.predict(net, image, settings, scale)[0]
            )
            for rescale, output, used in ((True, rescaled, scale), (False, unscaled, 1.0)):
                scores[rescale].append(
                    evaluation.score([scaled], [output], settings["postprocess"], kinds, [used])
                )
        row = {"factor": factor}
        sizes = pd.DataFrame(sizes, columns=["imaging_type", "right"])
        row[f"size within {SIZE_TOLERANCE}"] = float(sizes.right.mean())
        for kind, value in sizes.groupby("imaging_type").right.mean().items():
            row[f"{kind}, size within {SIZE_TOLERANCE}"] = float(value)
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
        {
            "model": args.model.name,
            "images": len(samples),
            "groups": args.groups,
            "tta": settings["tta"],
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
