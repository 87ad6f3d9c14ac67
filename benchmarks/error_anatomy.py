"""Where a model's DSB score is lost, per imaging type, on images it saw and did not see.

Segments images with a model's tuned settings (as ``predict`` does) and takes its errors
apart, for each imaging type:

- how many true nuclei are found at IoU 0.5, 0.75 and 0.9 (the DSB metric averages
  thresholds from 0.5 to 0.95, so outlines count as much as detection);
- the median area of a found nucleus over its true area;
- the score without "lone" objects, predictions with almost no true nucleus beneath
  (false detections, or nuclei the annotators left out);
- the score if every nucleus found at IoU 0.5 had its true outline (what better outlines
  and splits of the found nuclei could give).

It does this on the validation split and, with ``--training-images N``, on N training
images of each type: a model that scores no better on the images it trained on than on
unseen ones is not over-fitted but unable to fit them (for want of training, capacity or
consistent labels). With ``--specialist-minutes M`` it also fine-tunes the model for M
minutes on the training images of one type alone (``--specialist-type``, stained by
default) and scores that specialist on the same images. Writes
``reports/error_anatomy.json`` and prints a Markdown table::

    .venv/bin/python benchmarks/error_anatomy.py [--model models/unet.keras]
        [--training-images 25] [--specialist-minutes 15] [--max-images 0]

``--quick`` is a smoke run of every part (the tests use it): as many validation images as
the smoke profile takes (``notebooks/profiles/smoke.json``), one training image per type,
and a specialist fine-tuned for one epoch of the smoke's steps, batch and crop size, into
``reports/error_anatomy-quick.json`` and ``models/error_anatomy-quick/``.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from unet_tf import (
    config,
    data,
    evaluation,
    files,
    inference,
    metrics,
    postprocess,
    report,
    trained,
    training,
)

# A predicted object with less than this share of its pixels on true nuclei is "lone".
LONE_OVERLAP = 0.1
MATCH_THRESHOLDS = (0.5, 0.75, 0.9)


def anatomy(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """The error anatomy of one image: see the module's docstring.

    Examples
    --------
    A prediction shifted by one pixel finds the nucleus at IoU 0.5 but not at 0.9, and
    its true outline would make the image perfect:

    >>> truth = np.zeros((20, 20), np.int32)
    >>> truth[5:15, 5:15] = 1
    >>> predicted = np.roll(truth, 1, axis=1)
    >>> row = anatomy(truth, predicted)
    >>> row["found_0.5"], row["found_0.9"], row["dsb_true_outlines"]
    (1.0, 0.0, 1.0)
    """
    # Labels 1..N without gaps, so that row i of the IoU matrix is label i + 1.
    truth = postprocess.relabel_sequential(truth)
    predicted = postprocess.relabel_sequential(predicted)
    scores = metrics.image_scores(truth, predicted)
    true_count, pred_count = scores["true_count"], scores["pred_count"]
    row = {"true_count": true_count, "pred_count": pred_count, "dsb": scores["dsb_score"]}
    # "Found" is the metric's recall: matched at an IoU above the threshold.
    for threshold in MATCH_THRESHOLDS:
        recall = metrics.precision_recall_f1(truth, predicted, threshold)["recall"]
        row[f"found_{threshold}"] = recall
    iou = metrics.iou_matrix(truth, predicted)
    best = iou.max(axis=1) if iou.size else np.zeros(true_count)
    found = np.flatnonzero(best > MATCH_THRESHOLDS[0])
    partners = iou[found].argmax(axis=1) + 1 if found.size else np.zeros(0, int)
    true_areas = np.bincount(truth.ravel(), minlength=true_count + 1)
    pred_areas = np.bincount(predicted.ravel(), minlength=pred_count + 1)
    ratios = pred_areas[partners] / true_areas[found + 1]
    row["area_ratio"] = float(np.median(ratios)) if ratios.size else float("nan")

    on_truth = np.bincount(predicted.ravel(), weights=(truth > 0).ravel().astype(float))
    share = on_truth / np.maximum(pred_areas, 1)
    lone = np.flatnonzero(share < LONE_OVERLAP)
    lone = lone[lone > 0]
    row["lone_objects"] = int(lone.size)
    row["dsb_without_lone"] = metrics.dsb_score(
        truth, np.where(np.isin(predicted, lone), 0, predicted)
    )

    # Each found nucleus gets its true outline (new labels above the predicted ones, looked
    # up by true label); what was not found stays as predicted.
    outline_labels = np.zeros(true_count + 1, predicted.dtype)
    outline_labels[found + 1] = pred_count + 1 + np.arange(found.size)
    mended = outline_labels[truth]
    outlined = np.where(np.isin(predicted, partners), 0, predicted)
    outlined = np.where(mended > 0, mended, outlined)
    row["dsb_true_outlines"] = metrics.dsb_score(truth, outlined)
    return row


def measure(net, settings: dict, samples: list, images: str, model: str) -> pd.DataFrame:
    """One row per image: its type, which images and model, and :func:`anatomy`."""
    kinds = evaluation.imaging_types(samples)
    rows = []
    for image_id, image, truth in samples:
        output, scale = inference.predict(net, image, settings)
        predicted = inference.postprocessed(output, settings["postprocess"], scale)
        rows.append(
            {
                "model": model,
                "images": images,
                "imaging_type": kinds[image_id],
                **anatomy(truth, predicted),
            }
        )
    return pd.DataFrame(rows)


def summary(per_image: pd.DataFrame) -> pd.DataFrame:
    """Means per model, image set and imaging type (counts summed, area ratio median)."""
    groups = per_image.groupby(["model", "images", "imaging_type"], sort=False)
    table = groups.agg(
        count=("dsb", "size"),
        dsb=("dsb", "mean"),
        **{f"found@{t}": (f"found_{t}", "mean") for t in MATCH_THRESHOLDS},
        area_ratio=("area_ratio", "median"),
        true=("true_count", "sum"),
        predicted=("pred_count", "sum"),
        lone=("lone_objects", "sum"),
        dsb_without_lone=("dsb_without_lone", "mean"),
        dsb_true_outlines=("dsb_true_outlines", "mean"),
    )
    return table.reset_index()


def training_samples(index: pd.DataFrame, per_type: int, exclude: set[str]) -> list:
    """Up to ``per_type`` training images of each imaging type (``index`` of
    ``data.build_index``), picked with a fixed seed."""
    index = index[~index.image_id.isin(exclude)]
    picked = []
    for _, group in index.groupby("imaging_type"):
        ids = sorted(group.image_id)
        picked += list(np.random.default_rng(2018).permutation(ids)[:per_type])
    return data.load_samples(config.TRAIN_DIR, ids=sorted(picked), cache_dir=config.LABEL_CACHE)


def fine_tune_specialist(
    index: pd.DataFrame, model_path: Path, kind: str, minutes: float, models_dir: Path, **changes
) -> Path:
    """Fine-tune the model on the training images of one imaging type alone (validated on
    that type's validation images; ``index`` of ``data.build_index``) and return the
    specialist's path. ``changes`` go to ``training.fine_tune`` (``epochs``, say)."""
    kept = set(index.image_id[index.imaging_type == kind])
    validation = kept & set(data.load_ids(config.VALIDATION_IDS))
    result = training.fine_tune(
        model_path,
        sorted(kept - validation),
        sorted(validation),
        models_dir,
        model_name=f"specialist-{kind}",
        max_minutes=minutes,
        learning_rate=3e-4,
        **changes,
    )
    return result.paths["model"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=config.MODELS_DIR / "unet.keras")
    parser.add_argument(
        "--max-images", type=int, help="validation images (default all, or the smoke's)"
    )
    parser.add_argument(
        "--training-images", type=int, help="training images per type to score too (default 0)"
    )
    parser.add_argument(
        "--specialist-minutes", type=float, help="fine-tune a specialist (default 0: no)"
    )
    parser.add_argument("--specialist-type", default="stained", help="its imaging type")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few images, a one-epoch specialist"
    )
    args = parser.parse_args(argv)
    changes, defaults = {}, {"max_images": 0, "training_images": 0, "specialist_minutes": 0.0}
    if args.quick:
        smoke = report.training_config("smoke")
        # One epoch of the smoke's batches, not its network: the model's architecture stays.
        changes = {
            "epochs": 1,
            "steps_per_epoch": smoke.steps_per_epoch,
            "batch_size": smoke.batch_size,
            "crop_size": smoke.crop_size,
        }
        defaults = {
            "max_images": smoke.max_images,
            "training_images": 1,
            "specialist_minutes": smoke.max_minutes,
        }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.training_images < 0 or args.specialist_minutes < 0:
        parser.error("--training-images and --specialist-minutes must not be negative")
    stem = "error_anatomy-quick" if args.quick else "error_anatomy"

    net, settings, _ = trained.load_model_and_settings(args.model)
    validation = evaluation.validation_samples(args.max_images)
    image_sets = {"validation": validation}
    if args.training_images or args.specialist_minutes:
        index = data.build_index(config.TRAIN_DIR, cache_dir=config.LABEL_CACHE)
    if args.training_images:
        exclude = set(data.load_ids(config.VALIDATION_IDS))
        image_sets["training"] = training_samples(index, args.training_images, exclude)
    models = {"model": (net, settings)}
    if args.specialist_minutes:
        path = fine_tune_specialist(
            index,
            args.model,
            args.specialist_type,
            args.specialist_minutes,
            config.MODELS_DIR / stem,
            **changes,
        )
        # The specialist is scored with the model's tuned settings: a fair comparison of
        # the two networks, not of two tunings.
        models[f"{args.specialist_type} specialist"] = (training.load_model(path), settings)

    frames = []
    for model_name, (network, used) in models.items():
        for set_name, samples in image_sets.items():
            if model_name != "model":
                # A specialist is judged on its own imaging type only.
                kinds = evaluation.imaging_types(samples)
                samples = [s for s in samples if kinds[s[0]] == args.specialist_type]
            frames.append(measure(network, used, samples, set_name, model_name))
    table = summary(pd.concat(frames, ignore_index=True))
    print(evaluation.markdown_table(table))
    files.write_json(
        config.REPORTS_DIR / f"{stem}.json",
        {
            "model": config.portable(args.model),
            "settings": settings,
            "specialist_minutes": args.specialist_minutes,
            "rows": table.to_dict(orient="records"),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
