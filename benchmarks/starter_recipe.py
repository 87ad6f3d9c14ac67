"""The popular DSB2018 starter recipe, trained and scored on our split for comparison.

The recipe of the well-known Keras U-Net starter kernel: every training image resized to
128x128, a U-Net with 16..256 filters, binary cross-entropy, predictions resized back to the
image size, thresholded at 0.5 and cut into nuclei by connected components. It is trained
here on our training split, within the same wall-time budget as the default ``make report``
training, and scored on the same validation split with the same metric, so the two numbers
stand side by side. Writes ``reports/starter_recipe.json``.

    .venv/bin/python benchmarks/starter_recipe.py [--minutes 42] [--max-images 0]

``--quick`` is a smoke run (the tests use it): one epoch on as many images as the smoke
profile takes (``notebooks/profiles/smoke.json``), scored on as many validation images, into
``reports/starter_recipe-quick.json``.
"""

import argparse
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from unet_tf import config, data, evaluation, files, model, report, training

SIZE = 128


def resize(array: np.ndarray, shape, method: str) -> np.ndarray:
    return tf.image.resize(array, shape, method=method).numpy()


def starter_model() -> keras.Model:
    """The starter kernel's network, compiled as it compiles it: depth 4, 16..256 filters, no
    batch normalisation, dropout between the convolutions, sigmoid output, Adam and BCE."""
    net = model.get_model(depth=4, base_filters=16, batch_norm=False, dropout_rate=0.1)
    net.compile(optimizer="adam", loss="binary_crossentropy")
    return net


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=42.0, help="training wall-time budget")
    parser.add_argument("--epochs", type=int, help="upper bound on epochs (default 1000, quick 1)")
    parser.add_argument("--max-images", type=int, help="default all, or the smoke's")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--quick", action="store_true", help="smoke run: one epoch, few images")
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.quick else 1000
    if args.max_images is None:
        args.max_images = report.training_config("smoke").max_images if args.quick else 0

    keras.utils.set_random_seed(args.seed)
    train_ids, _ = data.train_validation_ids(config.TRAIN_DIR, config.VALIDATION_IDS)
    if args.max_images:
        train_ids = train_ids[: args.max_images]
    cache = config.LABEL_CACHE
    train = data.load_samples(config.TRAIN_DIR, ids=train_ids, cache_dir=cache)
    images = np.stack([resize(image, (SIZE, SIZE), "bilinear") for _, image, _ in train])
    masks = np.stack(
        [
            resize((labels > 0).astype(np.uint8)[..., None], (SIZE, SIZE), "nearest")
            for *_, labels in train
        ]
    )

    net = starter_model()
    started = time.monotonic()
    history = net.fit(
        images,
        masks.astype(np.float32),
        batch_size=16,
        epochs=args.epochs,
        validation_split=0.1,
        callbacks=[
            keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True),
            training.TimeLimit(args.minutes),
        ],
        verbose=2,
    )
    minutes = (time.monotonic() - started) / 60

    samples = evaluation.validation_samples(args.max_images)
    outputs = [
        resize(
            net.predict(resize(image, (SIZE, SIZE), "bilinear")[None], verbose=0)[0],
            image.shape[:2],
            "bilinear",
        )
        for _, image, _ in samples
    ]
    scores = evaluation.score(
        samples, outputs, {"method": "components", "threshold": 0.5, "min_area": 1}
    )
    result = {
        "recipe": "128x128 resize, U-Net 16..256 filters, BCE, threshold 0.5, connected components",
        **{key: float(scores[key].mean()) for key in ("dsb_score", "pixel_iou", "dice")},
        "validation_images": len(scores),
        "epochs_trained": len(history.history["loss"]),
        "training_minutes": round(minutes, 2),
    }
    name = "starter_recipe-quick.json" if args.quick else "starter_recipe.json"
    files.write_json(config.REPORTS_DIR / name, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
