"""Fine-tuning on a few annotated images of a source the model has never seen.

Takes the default model that ``benchmarks/generalization.py`` trained without its held-out
groups (``models/generalization/generalization-default.keras``), picks a few images of one
held-out group (by default 5 of ``stained 320x256``, the H&E tissue), fine-tunes the model on
them for a few epochs (``init_model``, the same as ``train --init-model`` and the training
notebook's parameter), and scores the rest of the group, and the validation split, before
and after. Two further images of the group serve as the fine-tuning's validation images and
are not scored. Both models use the base model's tuned post-processing; each rescales images
to the nucleus size of its own training images. Writes ``reports/fine_tune.json`` and
prints a Markdown table::

    .venv/bin/python benchmarks/fine_tune.py [--group "stained 320x256"] [--images 5] [--epochs 3]

The budget is in epochs of 50 batches, so the result does not depend on what else the CPU
runs; the minutes it took are recorded.

``--quick`` is a smoke run (the tests use it): 2 images, one epoch of the smoke profile's
steps, batch and crop size (``notebooks/profiles/smoke.json``), and as many images scored as
that profile takes, into ``reports/fine_tune-quick.json`` and ``models/fine_tune-quick/``,
so that it never mixes with the real results.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from unet_tf import config, data, evaluation, files, report, trained, training

BASE = config.MODELS_DIR / "generalization" / "generalization-default.keras"


def scores_of(model_path: Path, settings: dict, samples: list) -> pd.DataFrame:
    """Per-image scores of a saved model with ``settings``."""
    model = training.load_model(model_path)
    return evaluation.score_model(model, samples, settings)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=BASE, help="the model to fine-tune")
    parser.add_argument("--group", default="stained 320x256", help="the held-out group")
    parser.add_argument(
        "--images", type=int, help="annotated images to train on (default 5, quick 2)"
    )
    parser.add_argument("--epochs", type=int, help="fine-tuning budget (default 3, quick 1)")
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=2018, help="which images are picked")
    parser.add_argument(
        "--max-images",
        type=int,
        help="images scored, of the group and of the validation split (default all, or the "
        "smoke profile's)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few images, the smoke profile's steps"
    )
    args = parser.parse_args(argv)
    changes, defaults = {}, {"images": 5, "epochs": 3, "max_images": 0}
    if args.quick:
        smoke = report.training_config("smoke")
        # The smoke's batches, not its network: the base model's architecture stays.
        changes = {
            "steps_per_epoch": smoke.steps_per_epoch,
            "batch_size": smoke.batch_size,
            "crop_size": smoke.crop_size,
        }
        defaults = {"images": 2, "epochs": 1, "max_images": smoke.max_images}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    stem = "fine_tune-quick" if args.quick else "fine_tune"

    base_record = training.read_run_record(args.base.with_suffix(".json"))
    if not base_record.get("excluded_ids"):
        print(f"error: {args.base} was trained on every image; run generalization.py first")
        return 2
    index = data.build_index(config.TRAIN_DIR, cache_dir=config.LABEL_CACHE)
    sizes = index.width.astype(str) + "x" + index.height.astype(str)
    group = sorted(index.image_id[(index.imaging_type + " " + sizes) == args.group])
    unseen = sorted(set(group) & set(base_record["excluded_ids"]))
    if len(unseen) < args.images + 3:
        print(f"error: {args.group!r} has {len(unseen)} images the base model never saw")
        return 2
    picked = np.random.default_rng(args.seed).permutation(unseen)
    tune_ids = sorted(picked[: args.images])
    check_ids = sorted(picked[args.images : args.images + 2])
    rest = sorted(picked[args.images + 2 :])
    if args.max_images:
        rest = rest[: args.max_images]

    models_dir = config.MODELS_DIR / stem
    started = time.monotonic()
    result = training.fine_tune(
        args.base,
        tune_ids,
        check_ids,
        models_dir,
        epochs=args.epochs,
        max_minutes=24 * 60.0,
        learning_rate=args.learning_rate,
        **changes,
    )
    minutes = (time.monotonic() - started) / 60
    tuned_record = training.read_run_record(result.paths["record"])

    _, settings, _ = trained.load_model_and_settings(args.base)
    settings = {**settings, "tta": False}
    tuned_settings = {**settings, "nucleus_diameter": tuned_record["nucleus_diameter"]}
    group_samples = data.load_samples(config.TRAIN_DIR, ids=rest, cache_dir=config.LABEL_CACHE)
    validation = [
        s
        for s in evaluation.validation_samples(args.max_images)
        if s[0] not in set(base_record["excluded_ids"])
    ]
    rows = []
    for name, path, used in (
        ("before (default model)", args.base, settings),
        ("after fine-tuning", result.paths["model"], tuned_settings),
    ):
        on_group = scores_of(path, used, group_samples)
        on_validation = scores_of(path, used, validation)
        rows.append(
            {
                "model": name,
                f"{args.group} DSB ({len(rest)} images)": on_group.dsb_score.mean(),
                f"{args.group} F1@0.5": on_group.f1.mean(),
                f"validation split DSB ({len(validation)} images)": on_validation.dsb_score.mean(),
            }
        )
    table = pd.DataFrame(rows)
    print(evaluation.markdown_table(table))
    files.write_json(
        config.REPORTS_DIR / f"{stem}.json",
        {
            "group": args.group,
            "fine_tuning_ids": tune_ids,
            "fine_tuning_validation_ids": check_ids,
            "scored_ids": rest,
            "minutes_training": tuned_record["training_minutes"],
            "minutes_total": round(minutes, 1),
            "epochs": tuned_record["epochs_trained"],
            "recipe": tuned_record["parameters"],
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
