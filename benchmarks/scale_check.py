"""Scale check: the validation images at other magnifications, segmented as ``predict`` does.

Every validation image is resampled by each factor (bilinear for the image, nearest
neighbour for its labels), segmented with the model's tuned settings, with the automatic
rescaling to the training nucleus size and without it, and scored with the DSB metric. A
model that works at any magnification scores about the same at every factor. Writes
``reports/scale_check.json`` and prints a Markdown table::

    .venv/bin/python benchmarks/scale_check.py [--model models/unet.keras] [--max-images 0]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from unet_tf import config, evaluation, files, inference, predict

FACTORS = (0.5, 1.0, 2.0, 4.0)


def resampled(sample, factor: float):
    """An ``(image_id, image, labels)`` sample at ``factor`` times its size."""
    image_id, image, labels = sample
    shape = inference.scaled_shape(image.shape, factor)
    image = inference.resize(image, shape)
    labels = tf.image.resize(labels[..., None].astype(np.float32), shape, method="nearest")
    return image_id, image, np.round(labels.numpy()[..., 0]).astype(np.int32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=config.MODELS_DIR / "unet.keras")
    parser.add_argument("--max-images", type=int, default=0, help="validation images (0: all)")
    parser.add_argument("--factors", type=float, nargs="*", default=list(FACTORS))
    parser.add_argument("--no-tta", action="store_true", help="skip test-time augmentation")
    args = parser.parse_args(argv)

    net, settings, tuned = predict.load_model_and_settings(args.model)
    if not tuned or not settings.get("nucleus_diameter"):
        print(
            f"note: {args.model} has no tuned rescaling settings; run 03-results", file=sys.stderr
        )
    if args.no_tta:
        settings["tta"] = False
    samples = evaluation.validation_samples(args.max_images)
    rows = []
    for factor in args.factors:
        scaled = [resampled(sample, factor) for sample in samples]
        row = {"factor": factor}
        for rescale in (True, False):
            frame = evaluation.score_model(net, scaled, {**settings, "rescale": rescale})
            row["DSB, automatic scale" if rescale else "DSB, no rescaling"] = float(
                frame.dsb_score.mean()
            )
        rows.append(row)
        print(row, flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="%.3f"))
    files.write_json(
        config.REPORTS_DIR / "scale_check.json",
        {"model": args.model.name, "images": len(samples), "tta": settings["tta"], "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
