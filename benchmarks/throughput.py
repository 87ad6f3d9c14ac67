"""Training and inference throughput against what this CPU can do (``make bench``).

Measured on synthetic data, so no dataset is needed:

- the CPU's float32 matrix-multiply rate in TensorFlow (n = 1024), the yardstick;
- the model's forward FLOPs per pixel, counted from its convolutions (a training step is
  taken as three forward passes: forward, and twice that for the backward pass);
- training throughput of the default model on 256x256 crops (crops/s, Mpx/s) and the share
  of the matmul rate it reaches;
- full-resolution inference throughput (``unet_tf.inference.predict_full`` on a 1024x1024
  image) with and without TTA, and its share of the matmul rate;
- the peak resident memory of the process;
- the same for the starter recipe (128x128 inputs, 16..256 filters, no batch norm), side
  by side, with the ratios.

Writes ``reports/benchmarks.json``::

    .venv/bin/python benchmarks/throughput.py [--quick]
"""

import argparse
import json
import resource
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from unet_tf import config, files, inference, model


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


def training_rate(net: keras.Model, side: int, batch: int, steps: int) -> float:
    """Training crops per second on synthetic crops, after a warm-up."""
    rng = np.random.default_rng(0)
    images = rng.random((batch, side, side, net.input_shape[-1])).astype(np.float32)
    targets = (rng.random((batch, side, side, net.output_shape[-1])) > 0.5).astype(np.float32)
    dataset = tf.data.Dataset.from_tensors((images, targets)).repeat()
    net.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    started = time.perf_counter()
    net.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - started)


def inference_rate(net: keras.Model, side: int, tta: bool, repeats: int) -> float:
    """Full-resolution inference megapixels per second on a ``side`` square image."""
    image = np.random.default_rng(1).random((side, side, 3)).astype(np.float32)
    inference.predict_full(net, image, tta=tta)
    started = time.perf_counter()
    for _ in range(repeats):
        inference.predict_full(net, image, tta=tta)
    return repeats * side * side / 1e6 / (time.perf_counter() - started)


def starter_rate(side: int = 128, batch: int = 16, steps: int = 20) -> dict:
    """The starter recipe's training and (resized) inference throughput."""
    net = model.get_model(depth=4, base_filters=16, batch_norm=False, dropout_rate=0.1)
    net.compile(optimizer="adam", loss="binary_crossentropy")
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a rough check)")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args(argv)
    steps, repeats = (5, 1) if args.quick else (30, 3)

    gflops = matmul_gflops(seconds=1.0 if args.quick else 3.0)
    print(f"matmul float32 (n=1024): {gflops:.1f} GFLOP/s")

    net = model.get_model(num_classes=2)
    net.compile(optimizer="adam", loss="binary_crossentropy")
    flops = conv_flops_per_pixel(net, args.crop)
    crops = training_rate(net, args.crop, args.batch, steps)
    train_mpx = crops * args.crop**2 / 1e6
    train_share = train_mpx * 1e6 * 3 * flops / (gflops * 1e9)
    plain = inference_rate(net, 1024, tta=False, repeats=repeats)
    tta = inference_rate(net, 1024, tta=True, repeats=1)
    infer_share = plain * 1e6 * flops / (gflops * 1e9)

    starter = starter_rate(steps=steps * 2)
    starter_flops = conv_flops_per_pixel(starter.pop("net"), 128)
    starter_share = starter["training_mpx_per_s"] * 1e6 * 3 * starter_flops / (gflops * 1e9)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    result = {
        "matmul_gflops": gflops,
        "default_model": {
            "forward_gflop_per_megapixel": flops / 1e3,
            "training_crops_per_s": crops,
            "training_mpx_per_s": train_mpx,
            "training_share_of_matmul": train_share,
            "inference_mpx_per_s": plain,
            "inference_tta_mpx_per_s": tta,
            "inference_share_of_matmul": infer_share,
            "crop": args.crop,
            "batch": args.batch,
        },
        "starter_recipe": {
            **starter,
            "forward_gflop_per_megapixel": starter_flops / 1e3,
            "training_share_of_matmul": starter_share,
        },
        "ratios": {
            "training_mpx_default_over_starter": train_mpx / starter["training_mpx_per_s"],
        },
        "peak_rss_mb": peak_mb,
        "quick": args.quick,
    }
    files.write_json(config.REPORTS_DIR / "benchmarks.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
