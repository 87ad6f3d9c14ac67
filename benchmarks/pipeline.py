"""Input pipeline throughput next to the training step rate (``make bench``).

The pipeline must produce crops at least 5 times faster than the model trains on them, so
that it never starves training. Measured on the real DSB2018 training split (``make data``),
with the default model, crop size and batch size; prints a table and exits non-zero if the
pipeline is slower than 5x the training rate.

    .venv/bin/python benchmarks/pipeline.py [--batches 30] [--steps 10]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

# Run as a script, this folder is on the path: one steady-state step timing for both benchmarks.
from throughput import fit_rate

from unet_tf import config, data, pipeline, training

REQUIRED_RATIO = 5.0


def crops_per_second(dataset: tf.data.Dataset, batches: int, batch_size: int) -> float:
    iterator = iter(dataset)
    for _ in range(3):  # Warm-up: tracing and the first parallel calls.
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="batches timed per pipeline")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    train_ids, _ = data.train_validation_ids(config.TRAIN_DIR, config.VALIDATION_IDS)
    started = time.perf_counter()
    samples = data.load_samples(config.TRAIN_DIR, ids=train_ids, cache_dir=config.LABEL_CACHE)
    packed = pipeline.pack_samples([s[1] for s in samples], [s[2] for s in samples])
    print(f"loaded and packed {len(samples)} images in {time.perf_counter() - started:.1f} s")

    settings = {
        "default augmentation": pipeline.Augmentation(),
        "+ affine and elastic": pipeline.Augmentation(affine=True, elastic=True),
    }
    rates = {}
    for name, augmentation in settings.items():
        dataset = pipeline.make_training_dataset(
            packed, args.crop_size, args.batch_size, augmentation=augmentation, seed=0
        )
        rates[name] = crops_per_second(dataset, args.batches, args.batch_size)

    keras.utils.set_random_seed(0)
    # The default model of 02-training, compiled (with XLA) by the same library call: the
    # faster step is the harder bar.
    recipe = training.TrainingConfig(crop_size=args.crop_size, batch_size=args.batch_size)
    net = training.build_model(recipe)
    dataset = pipeline.make_training_dataset(
        packed, args.crop_size, args.batch_size, recipe.target, seed=0
    )
    training_speed = fit_rate(net, dataset, args.batch_size, args.steps)

    print(
        f"\ncrop {args.crop_size}x{args.crop_size}, batch {args.batch_size}, {os.cpu_count()} CPUs"
    )
    print(f"{'what':<28}{'crops/s':>10}{'x training':>12}")
    print(f"{'training step (default U-Net)':<28}{training_speed:>10.1f}{1.0:>12.1f}")
    for name, rate in rates.items():
        print(f"{'pipeline, ' + name:<28}{rate:>10.1f}{rate / training_speed:>12.1f}")
    slowest = min(rates.values()) / training_speed
    if slowest < REQUIRED_RATIO:
        print(f"\nFAIL: the pipeline is only {slowest:.1f}x the training rate", file=sys.stderr)
        return 1
    print(f"\nOK: the slowest pipeline is {slowest:.1f}x the training rate (>= {REQUIRED_RATIO}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
