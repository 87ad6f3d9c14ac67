"""Training and inference throughput against what this CPU can do (``make bench``).

Measured on synthetic data, so no dataset is needed:

- the CPU's float32 matrix-multiply rate in TensorFlow (n = 1024), the yardstick;
- the model's forward FLOPs per pixel, counted from its convolutions (a training step is
  taken as three forward passes: forward, and twice that for the backward pass);
- training throughput of the default recipe (two output channels, BCE + Dice, the pixel
  metrics) on 256x256 crops, in crops/s and Mpx/s and as a share of the matmul rate, with
  XLA and without, in float32 and mixed precision; the path ``train`` takes on this machine
  (``precision="auto"``, see ``unet_tf.training.resolve_speed``) is named as the default;
- full-resolution inference throughput (``unet_tf.inference.predict_full`` on a 1024x1024
  image) with the default 1024-pixel tiles, with the former 512-pixel tiles, and with TTA;
- post-processing (the tuned watershed and the others) and run-length encoding of a
  1024x1024 output with 300 nuclei;
- the whole stage1_test submission as ``04-submission`` makes it (read, TTA, post-process,
  encode, write, validate), with the trained model and its tuned settings when they exist;
- the peak resident memory of the process;
- the same for the starter recipe (128x128 inputs, 16..256 filters, no batch norm), side
  by side, with the ratios.

Writes ``reports/benchmarks.json``::

    .venv/bin/python benchmarks/throughput.py [--quick]

``--quick`` takes fewer steps and repeats (a rough check). With ``--crop 64 --batch 2
--side 256 --test-images 1 --variants`` as well (small crops, batches and images, the
default training path alone) it is the tests' smoke run (then write it elsewhere:
``UNET_TF_REPORTS_DIR``).
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from keras import layers
from scipy import ndimage

# Run as a script, this folder is on the path.
from starter_recipe import starter_model

from unet_tf import config, files, inference, postprocess, rle, submission, training


def matmul_gflops(n: int = 1024, seconds: float = 3.0) -> float:
    """Sustained float32 matrix-multiply rate of ``tf.matmul`` in GFLOP/s."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))

    @tf.function
    def multiply(a, b):
        return tf.matmul(a, b)

    multiply(a, b).numpy()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        multiply(a, b).numpy()
        count += 1
    elapsed = time.perf_counter() - started
    return 2 * n**3 * count / elapsed / 1e9


def conv_flops_per_pixel(net: keras.Model, side: int = 256) -> float:
    """Forward FLOPs per input pixel, measured by running the model on a ``side`` input."""
    sub = keras.Model(
        net.inputs,
        [
            layer.output
            for layer in net.layers
            if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))
        ],
    )
    outputs = sub(np.zeros((1, side, side, net.input_shape[-1]), np.float32))
    convs = [
        layer for layer in net.layers if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))
    ]
    total = 0.0
    for layer, output in zip(convs, outputs, strict=True):
        k_h, k_w = layer.kernel_size
        c_out = layer.filters
        # Kernels are (k_h, k_w, in, out), and (k_h, k_w, out, in) when transposed.
        transposed = isinstance(layer, layers.Conv2DTranspose)
        c_in = layer.kernel.shape[-1] if transposed else layer.kernel.shape[2]
        out_pixels = output.shape[1] * output.shape[2]
        if isinstance(layer, layers.Conv2DTranspose):
            in_pixels = out_pixels / (layer.strides[0] * layer.strides[1])
            total += 2 * k_h * k_w * c_in * c_out * in_pixels
        else:
            total += 2 * k_h * k_w * c_in * c_out * out_pixels
    return total / (side * side)


class StepTimes(keras.callbacks.Callback):
    """Wall-clock time at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def fit_rate(net: keras.Model, dataset, batch: int, steps: int, warmup: int = 3) -> float:
    """Steady-state training crops per second of ``net`` on ``dataset``.

    The steps are timed inside one ``fit`` call, from the end of the warm-up steps (tracing,
    XLA compilation) to the end of the last step. Timing whole ``fit`` calls would add the
    start and end of a ``fit``, which with a synthetic dataset came out in multiples of
    about 10 s and hid real differences.
    """
    timer = StepTimes()
    # A dataset cannot be shuffled by Keras (it warns when asked to).
    net.fit(
        dataset,
        steps_per_epoch=warmup + steps,
        epochs=1,
        verbose=0,
        callbacks=[timer],
        shuffle=False,
    )
    return steps * batch / (timer.times[-1] - timer.times[warmup - 1])


def training_rate(net: keras.Model, side: int, batch: int, steps: int) -> float:
    """Steady-state training crops per second on synthetic ``side`` crops (:func:`fit_rate`)."""
    rng = np.random.default_rng(0)
    images = rng.random((batch, side, side, net.input_shape[-1])).astype(np.float32)
    targets = (rng.random((batch, side, side, net.output_shape[-1])) > 0.5).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()
    return fit_rate(net, dataset, batch, steps)


def variant_name(precision: str, jit_compile: bool) -> str:
    """The name of a training variant: ``xla``, ``no_xla``, ``xla_mixed_bfloat16`` ...

    >>> variant_name("mixed_bfloat16", False)
    'no_xla_mixed_bfloat16'
    """
    name = "xla" if jit_compile else "no_xla"
    return name if precision == "float32" else f"{name}_{precision}"


def default_recipe(jit_compile: bool) -> keras.Model:
    """The model of ``02-training``, built and compiled by the same library call."""
    keras.utils.set_random_seed(0)
    return training.build_model(training.TrainingConfig(jit_compile=jit_compile))


def inference_rate(
    net: keras.Model, side: int, tta: bool, repeats: int, tile_size: int = 1024
) -> float:
    """Full-resolution inference megapixels per second on a ``side`` square image."""
    image = np.random.default_rng(1).random((side, side, 3)).astype(np.float32)
    inference.predict_full(net, image, tta=tta, tile_size=tile_size)
    started = time.perf_counter()
    for _ in range(repeats):
        inference.predict_full(net, image, tta=tta, tile_size=tile_size)
    return repeats * side * side / 1e6 / (time.perf_counter() - started)


def synthetic_output(side: int = 1024, count: int = 300, seed: int = 0) -> np.ndarray:
    """A model-like ``(side, side, 2)`` output: blurred nucleus and border maps of ``count``
    random discs (radius 6 to 12 pixels, some touching)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((side, side), np.int32)
    rows, cols = np.ogrid[:side, :side]
    for index in range(1, count + 1):
        row, col = rng.uniform(12, side - 12, 2)
        radius = rng.uniform(6, 12)
        labels[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = index
    nucleus = labels > 0
    borders = nucleus & (ndimage.morphological_gradient(labels, size=3) > 0)
    return np.stack(
        [
            ndimage.gaussian_filter(nucleus.astype(np.float32), 1),
            ndimage.gaussian_filter(borders.astype(np.float32), 1),
        ],
        axis=-1,
    )


def postprocess_seconds(repeats: int) -> dict:
    """Best-of-``repeats`` seconds to post-process and encode a 1024x1024 output, per method."""
    output = synthetic_output()
    settings = {"threshold": 0.5, "min_area": 15}
    methods = {
        "watershed_border": {**settings, "marker_threshold": 0.7, "border_threshold": 0.35},
        "components": settings,
        "watershed_distance": settings,
    }
    result = {}
    for method, method_settings in methods.items():
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            labels = postprocess.to_instances(output, method, **method_settings)
            rles = rle.labels_to_rles(labels)
            times.append(time.perf_counter() - started)
        result[method] = {"seconds": min(times), "nuclei": len(rles)}
    return result


def submission_seconds(max_images: int = 0) -> dict | None:
    """The stage1_test submission as ``04-submission`` makes it (the same library call),
    timed from model loading to a validated CSV; ``None`` without test images. Uses the
    trained model and its tuned settings when they exist, else an untrained default model
    with the fallback settings and TTA (which costs the same per pixel)."""
    test_dir = Path(config.TEST_DIR)
    if not test_dir.is_dir():
        return None
    model_path = config.MODELS_DIR / "unet.keras"
    started = time.perf_counter()
    if model_path.is_file():
        net = training.load_model(model_path)
        settings = inference.read_settings(model_path)
    else:
        net = default_recipe(jit_compile=False)
        settings = {**inference.FALLBACK_SETTINGS, "tta": True}
    ids = submission.listed_ids(config.SAMPLE_SUBMISSION, test_dir)
    ids = ids[:max_images] if max_images else ids
    with tempfile.TemporaryDirectory() as folder:
        made = submission.make_submission(
            net, settings, test_dir, Path(folder) / "submission.csv", ids
        )
    return {
        "seconds": time.perf_counter() - started,
        "images": len(ids),
        "megapixels": made.megapixels,
        "trained_model": model_path.is_file(),
        "tta": bool(settings["tta"]),
        "tile_size": settings["tile_size"],
        "postprocess": settings["postprocess"]["method"],
    }


def starter_rate(side: int = 128, batch: int = 16, steps: int = 20) -> dict:
    """The starter recipe's training and (resized) inference throughput."""
    net = starter_model()
    crops = training_rate(net, side, batch, steps)
    images = np.random.default_rng(2).random((batch, side, side, 3)).astype(np.float32)
    net.predict_on_batch(images)
    started = time.perf_counter()
    for _ in range(5):
        net.predict_on_batch(images)
    per_image = (time.perf_counter() - started) / (5 * batch)
    return {
        "net": net,
        "training_crops_per_s": crops,
        "training_mpx_per_s": crops * side * side / 1e6,
        "inference_images_per_s": 1 / per_image,
    }


# The training variants timed by default: (XLA, precision).
VARIANTS = (
    (True, "float32"),
    (False, "float32"),
    (True, "mixed_bfloat16"),
    (True, "mixed_float16"),
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a rough check)")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--side", type=int, default=1024, help="inference image side")
    parser.add_argument(
        "--variants",
        nargs="*",
        choices=[variant_name(precision, jit) for jit, precision in VARIANTS],
        help="training variants timed (default all; the default path is always timed)",
    )
    parser.add_argument(
        "--test-images", type=int, help="stage1_test images submitted (default all, quick 8)"
    )
    args = parser.parse_args(argv)
    steps, repeats = (5, 1) if args.quick else (30, 3)
    if args.test_images is None:
        args.test_images = 8 if args.quick else 0
    side = args.side

    gflops = matmul_gflops(seconds=1.0 if args.quick else 3.0)
    print(f"matmul float32 (n=1024): {gflops:.1f} GFLOP/s", flush=True)

    flops = conv_flops_per_pixel(default_recipe(jit_compile=False), args.crop)

    def share(mpx_per_s: float, passes: int) -> float:
        return mpx_per_s * 1e6 * passes * flops / (gflops * 1e9)

    train_rates = {}
    variants = [
        # Mixed precision is slow on most CPUs: fewer steps.
        (jit, precision, steps if precision == "float32" else max(3, steps // 3))
        for jit, precision in VARIANTS
        if args.variants is None or variant_name(precision, jit) in args.variants
    ]
    # The path train() takes here (bfloat16 without XLA on CPUs with AMX units): timed
    # too, with the full steps, where it is none of the others.
    default_precision, default_jit = training.resolve_speed(training.TrainingConfig())
    default_path = variant_name(default_precision, default_jit)
    if default_path not in [variant_name(p, j) for j, p, _ in variants]:
        variants.insert(0, (default_jit, default_precision, steps))
    for jit_compile, precision, variant_steps in variants:
        name = variant_name(precision, jit_compile)
        training.set_precision(precision)
        net = default_recipe(jit_compile)
        crops = training_rate(net, args.crop, args.batch, variant_steps)
        mpx = crops * args.crop**2 / 1e6
        train_rates[name] = {
            "crops_per_s": crops,
            "mpx_per_s": mpx,
            "share_of_matmul": share(mpx, 3),
            "default_path": name == default_path,
        }
        marker = " (the default training path here)" if name == default_path else ""
        print(f"training, {name}: {crops:.2f} crops/s, {share(mpx, 3):.0%}{marker}", flush=True)
    training.set_precision("float32")
    net = default_recipe(True)

    inferring = {}
    for name, tile_size, tta in (
        ("tile_1024", 1024, False),
        ("tile_512", 512, False),
        ("tile_1024_tta", 1024, True),
    ):
        mpx = inference_rate(net, side, tta, 1 if tta else repeats, tile_size)
        inferring[name] = {
            "mpx_per_s": mpx,
            "share_of_matmul": share(mpx * (len(inference.DIHEDRAL) if tta else 1), 1),
        }
        print(f"inference {side}x{side}, {name}: {mpx:.3f} Mpx/s", flush=True)

    post = postprocess_seconds(repeats)
    print(f"post-processing and RLE: {post}", flush=True)
    whole = submission_seconds(max_images=args.test_images)
    print(f"stage1_test submission: {whole}", flush=True)

    starter = starter_rate(steps=steps * 2)
    starter_flops = conv_flops_per_pixel(starter.pop("net"), 128)
    starter_share = starter["training_mpx_per_s"] * 1e6 * 3 * starter_flops / (gflops * 1e9)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result = {
        "matmul_gflops": gflops,
        "cpus": os.cpu_count(),
        "default_model": {
            "forward_gflop_per_megapixel": flops / 1e3,
            "crop": args.crop,
            "batch": args.batch,
            "training": train_rates,
            "training_default_path": default_path,
            f"inference_{side}x{side}": inferring,
        },
        "postprocess_and_rle_1024x1024_300_nuclei": post,
        "stage1_test_submission": whole,
        "starter_recipe": {
            **starter,
            "forward_gflop_per_megapixel": starter_flops / 1e3,
            "training_share_of_matmul": starter_share,
        },
        "ratios": {
            "training_mpx_default_over_starter": train_rates[default_path]["mpx_per_s"]
            / starter["training_mpx_per_s"],
        },
        "peak_rss_mb": peak_mb,
        "quick": args.quick,
    }
    files.write_json(config.REPORTS_DIR / "benchmarks.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
