"""Experiment: the nucleus size of an image from the network's own features (Cellpose-style).

Cellpose estimates an image's diameter by a linear regression from the pooled "style"
vector of its network to the log diameter, then refines it with one segmentation pass at
the estimated scale. Here: the global mean of the activations of the bottom block and of
every decoder block of a trained U-Net, for an image at a random zoom, regressed (ridge)
on the log median inscribed diameter of its labels times the zoom. Fitted on the model's
own training images; judged on images it never saw (the validation split without the
held-out groups, and every held-out group) at 0.5x to 6x: the share of images whose
estimate lies within a factor 1.3 of the truth, alone and refined by one pass of the
network at the estimated scale.

    .venv/bin/python benchmarks/size_from_features.py \
        --model models/generalization/generalization-default.keras
"""

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV

from unet_tf import appearance, config, data, inference, training
from unet_tf.model import model_channels, pad_to_shape

sys.path.insert(0, str(Path(__file__).parent))
from generalization import choose_groups, source_groups

LAYERS = ("bottom_relu2", "up3_relu2", "up2_relu2", "up1_relu2", "up0_relu2")
CROP = 384
FACTORS = (0.5, 1.0, 2.0, 2.5, 4.0, 6.0)


def extractor(model) -> keras.Model:
    """A model giving the spatial mean of each of ``LAYERS``' activations, concatenated."""
    outputs = []
    for name in [*LAYERS, "head"]:
        tensor = model.get_layer(name).output
        mean = keras.ops.mean(tensor, axis=(1, 2))
        spread = keras.ops.sqrt(keras.ops.mean(tensor**2, axis=(1, 2)) - mean**2 + 1e-6)
        outputs += [mean, spread]
    return keras.Model(model.input, keras.ops.concatenate(outputs, axis=-1))


def crops_at(represented: np.ndarray, factor: float, rng, count: int) -> list[np.ndarray]:
    """Up to ``count`` crops of at most CROP pixels of the represented image zoomed by
    ``factor``: each a region of CROP / factor pixels of the original, resampled."""
    height, width = represented.shape[:2]
    side = max(1, round(CROP / factor))
    crops = []
    for _ in range(count):
        top = int(rng.integers(0, max(1, height - side + 1)))
        left = int(rng.integers(0, max(1, width - side + 1)))
        region = represented[top : top + side, left : left + side]
        shape = inference.scaled_shape(region.shape, factor)
        crops.append(inference.resize(region, shape, sharp=factor > 1))
    return crops


def features(extract, crops: list[np.ndarray], multiple: int = 16) -> np.ndarray:
    """The mean over ``crops`` of their pooled features (each padded by reflection)."""
    vectors = []
    for crop in crops:
        height, width = crop.shape[:2]
        shape = (
            max(multiple, -(-height // multiple) * multiple),
            max(multiple, -(-width // multiple) * multiple),
        )
        padded, _ = pad_to_shape(crop, shape)
        vectors.append(extract.predict_on_batch(padded[None])[0])
    return np.mean(vectors, axis=0)


def represent(model, image: np.ndarray) -> np.ndarray:
    return appearance.to_model_input(image, model_channels(model))


def dump_features(args, model, extract, rng, index, held, validation, vectors, rows):
    """Save the training features and, per judged image and factor, its features and truth."""
    scored = held.groupby("group").head(args.max_scored)
    kinds = dict(zip(index.image_id, index.imaging_type, strict=True))
    groups_of = dict(zip(scored.image_id, scored.group, strict=True))
    judged = [i for i in index.image_id if i in validation and i not in set(held.image_id)]
    judged += list(scored.image_id)
    eval_vectors, meta = [], []
    for image_id, image, labels in data.iter_samples(
        config.TRAIN_DIR, ids=judged, with_labels=True, cache_dir=config.LABEL_CACHE
    ):
        truth = inference.median_diameter(labels)
        if not truth:
            continue
        represented = represent(model, image)
        for factor in FACTORS:
            crops = crops_at(represented, factor, rng, args.eval_crops)
            eval_vectors.append(features(extract, crops))
            group = groups_of.get(image_id, f"validation {kinds[image_id]}")
            meta.append((image_id, group, factor, truth * factor))
    np.savez(
        args.dump,
        train_x=np.array(vectors),
        train_y=np.array(rows),
        eval_x=np.array(eval_vectors),
        eval_meta=np.array(meta, dtype=object),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train-images", type=int, default=300)
    parser.add_argument("--zooms", type=int, default=3, help="random zooms per training image")
    parser.add_argument("--eval-crops", type=int, default=3)
    parser.add_argument("--max-scored", type=int, default=40, help="held-out images per group")
    parser.add_argument("--out", type=Path, default=Path("/tmp/exp/size_features.csv"))
    parser.add_argument("--dump", type=Path, help="save the features here and stop")
    args = parser.parse_args(argv)

    model = training.load_model(args.model)
    record = training.read_run_record(args.model.with_suffix(".json"))
    target = record["nucleus_diameter"]
    extract = extractor(model)
    rng = np.random.default_rng(0)

    index = data.build_index(config.TRAIN_DIR, cache_dir=config.LABEL_CACHE)
    index["group"] = source_groups(index)
    groups = choose_groups(index, 40)
    held = index[index.group.isin(groups)]
    validation = set(data.load_ids(config.VALIDATION_IDS))
    trained = [i for i in index.image_id if i not in validation and i not in set(held.image_id)]
    trained = list(rng.permutation(trained)[: args.train_images])

    rows, vectors = [], []
    for _, image, labels in data.iter_samples(
        config.TRAIN_DIR, ids=trained, with_labels=True, cache_dir=config.LABEL_CACHE
    ):
        truth = inference.median_diameter(labels)
        if not truth:
            continue
        represented = represent(model, image)
        for zoom in np.exp(rng.uniform(np.log(0.25), np.log(4.0), args.zooms)):
            vectors.append(features(extract, crops_at(represented, zoom, rng, 1)))
            rows.append(np.log(truth * zoom))
    if args.dump:
        dump_features(args, model, extract, rng, index, held, validation, vectors, rows)
        return 0
    regression = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(np.array(vectors), np.array(rows))
    fitted = np.exp(regression.predict(np.array(vectors)) - np.array(rows))
    print(
        f"fitted on {len(rows)} crops; alpha {regression.alpha_}; within 1.3 in training: "
        f"{np.mean((fitted < 1.3) & (fitted > 1 / 1.3)):.3f}",
        flush=True,
    )

    scored = held.groupby("group").head(args.max_scored)
    kinds = dict(zip(index.image_id, index.imaging_type, strict=True))
    groups_of = dict(zip(scored.image_id, scored.group, strict=True))
    judged = [i for i in index.image_id if i in validation and i not in set(held.image_id)]
    judged += list(scored.image_id)
    results = []
    for image_id, image, labels in data.iter_samples(
        config.TRAIN_DIR, ids=judged, with_labels=True, cache_dir=config.LABEL_CACHE
    ):
        truth = inference.median_diameter(labels)
        if not truth:
            continue
        represented = represent(model, image)
        for factor in FACTORS:
            crops = crops_at(represented, factor, rng, args.eval_crops)
            estimate = float(np.exp(regression.predict(features(extract, crops)[None])[0]))
            # One pass of the network at the scale the estimate asks, measured there.
            scale = float(np.clip(target / estimate, 1 / 4, 4)) * factor
            scaled_image = inference.resize(image, inference.scaled_shape(image.shape, scale))
            measured = inference._measure(model, scaled_image, 1.0, 1024)[0]
            refined = measured / scale * factor if measured else estimate
            results.append(
                {
                    "image_id": image_id,
                    "group": groups_of.get(image_id, f"validation {kinds[image_id]}"),
                    "factor": factor,
                    "truth": truth * factor,
                    "estimate": estimate,
                    "refined": refined,
                }
            )
    frame = pd.DataFrame(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    for column in ("estimate", "refined"):
        ratio = frame[column] / frame.truth
        frame[f"{column} ok"] = (ratio < 1.3) & (ratio > 1 / 1.3)
    table = frame.pivot_table(
        index="group", columns="factor", values=["estimate ok", "refined ok"], aggfunc="mean"
    )
    print(table.round(2).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
