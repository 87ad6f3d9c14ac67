"""Input pipeline throughput next to the training step rate (``make bench``).

The pipeline must produce crops at least 5 times faster than the model trains on them, so
that it never starves training. Measured on the real DSB2018 training split (``make data``),
with the default model, crop size and batch size; prints a table and exits non-zero if the
pipeline is slower than 5x the training rate.

    .venv/bin/python benchmarks/pipeline.py [--batches 30] [--steps 10]

``--quick`` is a smoke run (the tests use it): the smoke profile's recipe
(``notebooks/profiles/smoke.json``: a tiny U-Net, small crops and batches, a few images), a
few batches and steps; the table is printed, but a handful of batches times nothing
reliably, so a low ratio is reported without failing.
"""

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

# Run as a script, this folder is on the path: one steady-state step timing for both benchmarks.
from throughput import fit_rate

from unet_tf import config, data, pipeline, report, training

REQUIRED_RATIO = 5.0


def crops_per_second(dataset: tf.data.Dataset, batches: int, batch_size: int) -> float:
    """Crops per second that ``dataset`` yields, after a warm-up of three batches."""
    iterator = iter(dataset)
    for _ in range(3):  # Warm-up: tracing and the first parallel calls.
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--batches", type=int, help="batches timed per pipeline (default 30, quick 3)"
    )
    parser.add_argument("--steps", type=int, help="training steps timed (default 10, quick 2)")
    parser.add_argument("--crop-size", type=int, help="default: the recipe's")
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument(
        "--max-images", type=int, help="training images loaded (default all, or the smoke's)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: the smoke profile's tiny recipe"
    )
    args = parser.parse_args(argv)
    # The default recipe of 02-training (or the smoke's): its model, representation, target
    # and augmentation.
    base = report.training_config("smoke") if args.quick else training.TrainingConfig()
    recipe = dataclasses.replace(
        base,
        crop_size=args.crop_size or base.crop_size,
        batch_size=args.batch_size or base.batch_size,
    )
    args.crop_size, args.batch_size = recipe.crop_size, recipe.batch_size
    if args.batches is None:
        args.batches = 3 if args.quick else 30
    if args.steps is None:
        args.steps = 2 if args.quick else 10
    if args.max_images is None:
        args.max_images = base.max_images

    train_ids, _ = data.train_validation_ids(config.TRAIN_DIR, config.VALIDATION_IDS)
    if args.max_images:
        train_ids = train_ids[: args.max_images]
    started = time.perf_counter()
    samples = data.load_samples(config.TRAIN_DIR, ids=train_ids, cache_dir=config.LABEL_CACHE)
    packed = pipeline.pack_samples([s[1] for s in samples], [s[2] for s in samples])
    print(f"loaded and packed {len(samples)} images in {time.perf_counter() - started:.1f} s")

    deformed = dataclasses.replace(recipe.augmentation(), affine=True, elastic=True)
    settings = {
        "default recipe": (recipe.representation, recipe.augmentation()),
        "+ affine and elastic": (recipe.representation, deformed),
    }

    def default_dataset(representation, augmentation):
        return pipeline.make_training_dataset(
            packed,
            args.crop_size,
            args.batch_size,
            recipe.target,
            augmentation=augmentation,
            seed=0,
            representation=representation,
        )

    rates = {}
    for name, (representation, augmentation) in settings.items():
        dataset = default_dataset(representation, augmentation)
        rates[name] = crops_per_second(dataset, args.batches, args.batch_size)

    keras.utils.set_random_seed(0)
    # The default model trained as train() trains it on this machine: precision="auto"
    # (bfloat16 without XLA on CPUs with AMX, float32 with XLA elsewhere).
    precision, jit_compile = training.resolve_speed(recipe)
    training.set_precision(precision)
    net = training.build_model(dataclasses.replace(recipe, jit_compile=jit_compile))
    training_speed = fit_rate(
        net, default_dataset(*settings["default recipe"]), args.batch_size, args.steps
    )
    training.set_precision("float32")
    path = f"{precision}{', XLA' if jit_compile else ''}"

    print(
        f"\ncrop {args.crop_size}x{args.crop_size}, batch {args.batch_size}, {os.cpu_count()} CPUs"
    )
    print(f"default training path on this machine: {path}")
    model_name = "smoke U-Net" if args.quick else "default U-Net"
    lines = {f"training step ({model_name})": training_speed}
    lines.update({f"pipeline, {name}": rate for name, rate in rates.items()})
    width = max(map(len, lines)) + 2
    print(f"{'what':<{width}}{'crops/s':>10}{'x training':>12}")
    for name, rate in lines.items():
        print(f"{name:<{width}}{rate:>10.1f}{rate / training_speed:>12.1f}")
    slowest = min(rates.values()) / training_speed
    if slowest < REQUIRED_RATIO and args.quick:
        print(f"\n(quick: the slowest pipeline is {slowest:.1f}x the training rate; not judged)")
        return 0
    if slowest < REQUIRED_RATIO:
        print(f"\nFAIL: the pipeline is only {slowest:.1f}x the training rate", file=sys.stderr)
        return 1
    print(f"\nOK: the slowest pipeline is {slowest:.1f}x the training rate (>= {REQUIRED_RATIO}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
