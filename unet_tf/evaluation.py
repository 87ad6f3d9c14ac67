"""Scoring and tuning on labelled images: what ``03-results``, ``python -m unet_tf evaluate``,
``export`` and the benchmarks share.

A *sample* is ``(image_id, image, labels)`` as :func:`unet_tf.data.load_samples` gives it.
The network's output for every image is computed once (:func:`predict_outputs`); the
post-processing settings are then swept and scored on those outputs (:func:`sweep`), the
steps from plain connected components to watershed and test-time augmentation are compared
(:func:`ablation`), and the best one is chosen (:func:`tune`). :func:`save_tuning` stores the
choice beside the model, where ``04-submission``, ``predict`` and the Kaggle kernel read it.
"""

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from unet_tf import data, files, inference, metrics, postprocess

Sample = tuple[str, np.ndarray, np.ndarray]
SCORE_COLUMNS = ("dsb_score", "pixel_iou", "dice", "f1")


def validation_samples(
    max_images: int = 0,
    data_dir: str | Path | None = None,
    ids_path: str | Path | None = None,
) -> list[Sample]:
    """The validation images with their labels (the first ``max_images``; 0 means all).

    By default the committed split of stage1_train (``config.VALIDATION_IDS`` in
    ``config.TRAIN_DIR``), with the label cache.

    Raises
    ------
    ValueError
        If ``max_images`` is negative or an id is listed twice.
    FileNotFoundError
        If the data or the id list is missing.
    """
    from unet_tf import config

    if max_images < 0:
        raise ValueError(f"max_images must be 0 (all) or positive, got {max_images}")
    data_dir = Path(data_dir or config.TRAIN_DIR)
    ids = data.load_ids(ids_path or config.VALIDATION_IDS)
    if max_images:
        ids = ids[:max_images]
    cache = config.LABEL_CACHE if data_dir == Path(config.TRAIN_DIR) else None
    return data.load_samples(data_dir, ids=ids, cache_dir=cache)


def imaging_types(samples: Sequence[Sample]) -> dict[str, str]:
    """The imaging type of every sample, by image id (see ``data.imaging_type``)."""
    return {image_id: data.imaging_type(image) for image_id, image, _ in samples}


def source_groups(samples: Sequence[Sample]) -> dict[str, str]:
    """The source of every sample, by image id: its imaging type and size, such as
    ``stained 320x256`` (in DSB2018 one microscope, stain and magnification)."""
    return {
        image_id: f"{data.imaging_type(image)} {image.shape[1]}x{image.shape[0]}"
        for image_id, image, _ in samples
    }


def predict_outputs(
    model, samples: Sequence[Sample], tile_size: int = 1024, tta: bool = False
) -> list[np.ndarray]:
    """The network's full-resolution output for every sample (see ``inference.predict_full``)."""
    return [
        inference.predict_full(model, image, tile_size=tile_size, tta=tta)
        for _, image, _ in samples
    ]


def score(
    samples: Sequence[Sample],
    outputs: Sequence[np.ndarray],
    settings: dict,
    kinds: dict[str, str] | None = None,
    scales: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Post-process every output with ``settings`` and score it against its labels.

    Parameters
    ----------
    samples : sequence of (image_id, image, labels)
        The labelled images.
    outputs : sequence of numpy.ndarray
        The network's output for each sample, in the same order.
    settings : dict
        ``method`` and the keyword arguments of :func:`unet_tf.postprocess.to_instances`
        (``min_area`` defaults to ``postprocess.MIN_AREA``).
    kinds : dict, optional
        Imaging type by image id (see :func:`imaging_types`), to avoid computing it again
        when the same images are scored many times.
    scales : sequence of float, optional
        The factor each image was resampled by before it was predicted (1.0 for all by
        default); ``min_area`` follows it (see ``inference.scaled_postprocess``).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``image_id``, ``imaging_type`` and the numbers of
        :func:`unet_tf.metrics.image_scores`.

    Examples
    --------
    >>> truth = np.zeros((8, 8), np.int32)
    >>> truth[2:5, 2:5] = 1
    >>> output = (truth > 0).astype(np.float32)[..., None]
    >>> image = np.zeros((8, 8, 3), np.float32)
    >>> frame = score([("a", image, truth)], [output], {"method": "components", "min_area": 1})
    >>> float(frame.dsb_score[0]), frame.imaging_type[0]
    (1.0, 'fluorescence')
    """
    scales = [1.0] * len(samples) if scales is None else scales
    if not len(samples) == len(outputs) == len(scales):
        raise ValueError(f"{len(samples)} samples, {len(outputs)} outputs, {len(scales)} scales")
    settings = {"min_area": postprocess.MIN_AREA, **settings}
    kinds = kinds or imaging_types(samples)
    rows = []
    for (image_id, _, truth), output, scale in zip(samples, outputs, scales, strict=True):
        predicted = inference.postprocessed(output, settings, scale)
        rows.append(
            {
                "image_id": image_id,
                "imaging_type": kinds[image_id],
                **metrics.image_scores(truth, predicted),
            }
        )
    return pd.DataFrame(rows)


def score_model(model, samples: Sequence[Sample], settings: dict, estimate=None) -> pd.DataFrame:
    """Segment every sample as ``settings`` say (tuned settings of ``inference.read_settings``)
    and score it: one row per image, as :func:`score` gives; with a quality ``estimate``
    (:class:`unet_tf.quality.QualityModel`) also ``expected_dsb`` and ``reliable``, as
    ``predict`` writes them.

    Images are predicted one at a time, so memory does not grow with the number of images.
    """
    from unet_tf import quality

    frames = []
    for sample in samples:
        if estimate is None:
            output, scale = inference.predict(model, sample[1], settings)
        else:
            output, scale, spread = inference.predict(model, sample[1], settings, spread=True)
        frame = score([sample], [output], settings["postprocess"], scales=[scale])
        if estimate is not None:
            labels = inference.to_labels(output, settings, scale)
            _, verdict = quality.assess(estimate, labels, output, spread, scale, sample[1])
            frame = frame.assign(**verdict)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def by_type(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per imaging type, with image and object counts."""
    groups = per_image.groupby("imaging_type")
    table = groups.agg(
        {**{column: "mean" for column in SCORE_COLUMNS}, "true_count": "sum", "pred_count": "sum"}
    )
    table.insert(0, "images", groups.size())
    return table


def headline(per_image: pd.DataFrame) -> dict:
    """Overall means, the type-balanced mean DSB score and the per-type table as a dict.

    The type-balanced mean is the mean of the per-type DSB scores: a model that fails on
    the rare stained and brightfield images cannot hide behind the many fluorescence ones.
    """
    types = by_type(per_image)
    return {
        "dsb_score": float(per_image.dsb_score.mean()),
        "type_balanced_dsb_score": float(types.dsb_score.mean()),
        "pixel_iou": float(per_image.pixel_iou.mean()),
        "dice": float(per_image.dice.mean()),
        "f1_at_0.5": float(per_image.f1.mean()),
        "images": len(per_image),
        "by_imaging_type": types[["images", *SCORE_COLUMNS]].to_dict(orient="index"),
    }


SEMANTIC_COLUMNS = ("dice", "iou", "hausdorff", "hausdorff_95")


def semantic_samples(record: dict, max_images: int = 0) -> list[Sample]:
    """The validation images of a model's training run, read as it read them.

    The dataset, its intensity window, its task and the validation id list come from the
    training record (``models/<name>.json``), so a model trained on lung CT, say, is judged
    on the held-out patients it was kept from.

    Raises
    ------
    ValueError
        If ``max_images`` is negative, or the record is from before datasets were recorded.
    """
    from unet_tf import config, datasets

    if max_images < 0:
        raise ValueError(f"max_images must be 0 (all) or positive, got {max_images}")
    parameters = record["parameters"]
    if "validation_ids" not in record:
        raise ValueError("the training record names no validation split; train the model again")
    window = datasets.recorded_window(parameters)
    dataset = datasets.open_dataset(record["data"], window, parameters["task"])
    # Records keep paths inside the project relative to its root (config.portable).
    ids = data.load_ids(config.resolve(record["validation_ids"]))
    return dataset.load(ids[:max_images] if max_images else ids)


def predict_semantic(
    model, samples: Sequence[Sample], record: dict, tile_size: int = 1024, tta: bool = False
) -> list[np.ndarray]:
    """The outputs of a one-class model for ``samples``, at their own size: each image
    resampled by the ``input_scale`` of its training run (see the training record), predicted,
    and the output resampled back."""
    settings = {
        "tile_size": tile_size,
        "tta": tta,
        "input_scale": record["parameters"].get("input_scale", 1.0),
    }
    return [inference.predict(model, image, settings)[0] for _, image, _ in samples]


def score_semantic(
    samples: Sequence[Sample], outputs: Sequence[np.ndarray], threshold: float = 0.5
) -> pd.DataFrame:
    """Score one-class (semantic) outputs: the mask is where the first channel > ``threshold``.

    Returns
    -------
    pandas.DataFrame
        One row per image: ``image_id`` and the numbers of
        :func:`unet_tf.metrics.semantic_scores` (Hausdorff distances in pixels).

    Examples
    --------
    >>> truth = np.zeros((8, 8), np.int32); truth[2:6, 2:6] = 1
    >>> output = truth[..., None].astype(np.float32)
    >>> frame = score_semantic([("a", None, truth)], [output])
    >>> float(frame.dice[0]), float(frame.hausdorff_95[0])
    (1.0, 0.0)
    """
    if len(samples) != len(outputs):
        raise ValueError(f"{len(samples)} samples but {len(outputs)} outputs")
    return pd.DataFrame(
        [
            {"image_id": image_id, **metrics.semantic_scores(truth > 0, output[..., 0] > threshold)}
            for (image_id, _, truth), output in zip(samples, outputs, strict=True)
        ]
    )


def semantic_headline(per_image: pd.DataFrame) -> dict:
    """Means over images of a semantic scoring; Hausdorff distances over the images where
    both masks are non-empty (the others are counted apart)."""
    finite = per_image[np.isfinite(per_image.hausdorff)]
    return {
        "dice": float(per_image.dice.mean()),
        "iou": float(per_image.iou.mean()),
        "hausdorff": float(finite.hausdorff.mean()),
        "hausdorff_95": float(finite.hausdorff_95.mean()),
        "median_hausdorff_95": float(finite.hausdorff_95.median()),
        "images": len(per_image),
        "images_with_one_mask_empty": int(len(per_image) - len(finite)),
    }


def markdown_table(frame: pd.DataFrame) -> str:
    """A table as Markdown (for the README and notes), numbers to three decimals.

    Examples
    --------
    >>> print(markdown_table(pd.DataFrame({"step": ["plain"], "dsb_score": [0.5432]})))
    | step | dsb_score |
    |---|---|
    | plain | 0.543 |
    """

    def cell(value):
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines)


def default_grids(num_channels: int = 1) -> dict[str, list[dict]]:
    """The post-processing settings :func:`tune` tries, per method.

    Only the methods an output with ``num_channels`` channels can use are tried
    (:func:`unet_tf.postprocess.methods_for`): ``watershed_border`` needs the border channel
    and ``watershed_center`` the centre channel.
    """
    grids = {
        "components": [{"threshold": t} for t in (0.3, 0.4, 0.5, 0.6, 0.7)],
        "watershed_distance": [
            {"threshold": t, "min_distance": d} for t in (0.4, 0.5) for d in (1.0, 2.0, 4.0)
        ],
        "watershed_border": [
            {"threshold": t, "marker_threshold": m, "border_threshold": b}
            for t, m, b in itertools.product((0.4, 0.5), (0.5, 0.7, 0.85), (0.2, 0.35, 0.5))
        ],
        "watershed_center": [
            {"threshold": t, "marker_threshold": m}
            for t, m in itertools.product((0.4, 0.5), (0.3, 0.4, 0.5, 0.6, 0.7))
        ],
    }
    return {method: grids[method] for method in postprocess.methods_for(num_channels)}


def sweep(
    samples: Sequence[Sample],
    outputs: Sequence[np.ndarray],
    grids: dict[str, list[dict]],
    min_area: int = postprocess.MIN_AREA,
    kinds: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Mean DSB score of every setting of every method: one row per setting."""
    rows, kinds = [], kinds or imaging_types(samples)
    for method, grid in grids.items():
        for settings in grid:
            chosen = {"method": method, "min_area": min_area, **settings}
            frame = score(samples, outputs, chosen, kinds)
            rows.append({"method": method, **settings, "dsb_score": frame.dsb_score.mean()})
    table = pd.DataFrame(rows)
    # The score last, after the settings of every method.
    return table[[column for column in table if column != "dsb_score"] + ["dsb_score"]]


def best_settings(table: pd.DataFrame, method: str) -> dict:
    """The best-scoring settings of ``method`` in a :func:`sweep` table (without the method)."""
    rows = table[table.method == method]
    if rows.empty:
        raise ValueError(f"the sweep has no rows for method {method!r}")
    best = rows.sort_values("dsb_score").iloc[-1]
    return {
        key: float(value)
        for key, value in best.items()
        if key not in ("method", "dsb_score") and pd.notna(value)
    }


@dataclass(frozen=True)
class Step:
    """One row of the ablation: a name, TTA on or off, the post-processing, and whether
    images are rescaled to the training nucleus size."""

    name: str
    tta: bool
    postprocess: dict
    rescale: bool = False


def ablation_steps(table: pd.DataFrame, min_area: int, tta: bool) -> list[Step]:
    """The ablation, each step adding one thing: tuned threshold, watershed, borders,
    centres (for models that predict them), TTA."""

    def tuned(method: str) -> dict:
        return {"method": method, "min_area": min_area, **best_settings(table, method)}

    steps = [
        Step(
            "connected components, threshold 0.5",
            False,
            {"method": "components", "min_area": min_area, "threshold": 0.5},
        ),
        Step("connected components, tuned threshold", False, tuned("components")),
        Step("+ watershed on distance peaks", False, tuned("watershed_distance")),
    ]
    if "watershed_border" in set(table.method):
        steps.append(Step("+ watershed on predicted borders", False, tuned("watershed_border")))
    last = steps[-1]
    if "watershed_center" in set(table.method):
        steps.append(Step("+ watershed on predicted centres", False, tuned("watershed_center")))
        # TTA goes with the better of the two watersheds on predicted channels.
        best = table.groupby("method").dsb_score.max()
        if best["watershed_center"] >= best.get(last.postprocess["method"], -np.inf):
            last = steps[-1]
    if tta:
        steps.append(Step("+ test-time augmentation (8 flips/rotations)", True, last.postprocess))
    return steps


@dataclass
class Tuning:
    """What :func:`tune` found.

    Attributes
    ----------
    samples : list
        The labelled images tuned on.
    outputs : dict
        The network's outputs by ``(tta, rescale)``.
    scales : list of float
        The resampling factor of each image with automatic rescaling (1.0: none).
    sweep : pandas.DataFrame
        Every setting tried, with its mean DSB score.
    steps : list of Step
        The ablation's steps.
    results : dict
        Per-image scores of each step, by step name.
    chosen : Step
        The settings used from now on: the best step, with rescaling if it was asked for.
    seconds : dict
        Prediction time of each kind of output.
    nucleus_diameter : float or None
        The training nucleus size images were rescaled to.
    """

    samples: list
    outputs: dict
    sweep: pd.DataFrame
    steps: list
    results: dict
    chosen: Step
    seconds: dict = field(default_factory=dict)
    scales: list = field(default_factory=list)
    nucleus_diameter: float | None = None

    @property
    def ablation(self) -> pd.DataFrame:
        """One row per step: mean scores and object counts."""
        return pd.DataFrame(
            [
                {
                    "step": name,
                    **{column: frame[column].mean() for column in SCORE_COLUMNS},
                    "predicted objects": int(frame.pred_count.sum()),
                    "true objects": int(frame.true_count.sum()),
                }
                for name, frame in self.results.items()
            ]
        ).set_index("step")

    @property
    def per_image(self) -> pd.DataFrame:
        """Per-image scores with the chosen step."""
        return self.results[self.chosen.name]

    def labels(self, image_id: str, step: Step | None = None) -> np.ndarray:
        """The instance labels of one image with ``step`` (by default the chosen one)."""
        step = step or self.chosen
        index = [sample[0] for sample in self.samples].index(image_id)
        output = self.outputs[step.tta, step.rescale][index]
        scale = self.scales[index] if step.rescale else 1.0
        return inference.postprocessed(output, step.postprocess, scale)


def tune(
    model,
    samples: Sequence[Sample],
    tile_size: int = 1024,
    tta: bool = True,
    min_area: int = postprocess.MIN_AREA,
    grids: dict[str, list[dict]] | None = None,
    nucleus_diameter: float | None = None,
) -> Tuning:
    """Choose the post-processing (and TTA) that scores best on labelled ``samples``.

    The network runs once per image (and once more with TTA); every setting of ``grids``
    (by default :func:`default_grids`) is scored on the plain outputs, the best of each
    method forms the ablation, and the best step of the ablation is chosen.

    With ``nucleus_diameter`` (the training nucleus size, from the model's record) images
    are also rescaled so that their nuclei come to that size (see
    ``inference.estimate_scale``); the ablation shows it as a last row, and the chosen
    settings keep it on: it matters for images unlike the validation split, whose nuclei
    are mostly of the training size.

    Raises
    ------
    ValueError
        If there are no samples or ``min_area`` is negative.
    """
    if not samples:
        raise ValueError("no labelled images to tune on")
    if min_area < 0:
        raise ValueError(f"min_area must not be negative, got {min_area}")
    samples = list(samples)
    rescale = bool(nucleus_diameter)
    outputs, seconds = {}, {}
    for use_tta in (False, True) if tta else (False,):
        started = time.monotonic()
        outputs[use_tta, False] = predict_outputs(model, samples, tile_size=tile_size, tta=use_tta)
        seconds["TTA" if use_tta else "plain"] = time.monotonic() - started
    scales = [1.0] * len(samples)
    if rescale:
        started = time.monotonic()
        # The plain outputs at the image's own scale are the estimate's first pass.
        scales = [
            inference.estimate_scale(model, image, nucleus_diameter, tile_size, first_output=plain)
            for (_, image, _), plain in zip(samples, outputs[False, False], strict=True)
        ]
        for use_tta in (False, True) if tta else (False,):
            settings = {"tile_size": tile_size, "tta": use_tta}
            outputs[use_tta, True] = [
                inference.predict(model, image, settings, scale)[0] if scale != 1.0 else same
                for (_, image, _), scale, same in zip(
                    samples, scales, outputs[use_tta, False], strict=True
                )
            ]
        seconds["rescaling"] = time.monotonic() - started
    channels = outputs[False, False][0].shape[-1]
    kinds = imaging_types(samples)
    grids = grids or default_grids(channels)
    table = sweep(samples, outputs[False, False], grids, min_area, kinds)
    steps = ablation_steps(table, min_area, tta)

    def results_of(step: Step) -> pd.DataFrame:
        used = scales if step.rescale else None
        return score(samples, outputs[step.tta, step.rescale], step.postprocess, kinds, used)

    results = {step.name: results_of(step) for step in steps}
    chosen = max(steps, key=lambda step: results[step.name].dsb_score.mean())
    if rescale:
        name = "+ automatic rescaling to the training nucleus size"
        chosen = replace(chosen, name=name, rescale=True)
        steps.append(chosen)
        results[chosen.name] = results_of(chosen)
    return Tuning(
        samples, outputs, table, steps, results, chosen, seconds, scales, nucleus_diameter
    )


def save_tuning(
    tuning: Tuning,
    model_path: str | Path,
    tile_size: int,
    record: dict | None = None,
    metrics_path: str | Path | None = None,
) -> dict:
    """Store the chosen settings beside the model and the headline numbers as JSON.

    Writes ``<model>.inference.json`` (read by ``04-submission``, ``predict`` and the Kaggle
    kernel) and, if ``metrics_path`` is given, the headline numbers, the per-type table, the
    chosen post-processing and the ablation (``reports/metrics.json``). Returns that dict.
    """
    record = record or {}
    numbers = headline(tuning.per_image)
    result = {
        **numbers,
        "validation_images": numbers.pop("images"),
        "epochs_trained": record.get("epochs_trained"),
        "training_minutes": record.get("training_minutes"),
        "model": Path(model_path).name,
        "postprocess": tuning.chosen.postprocess,
        "tta": tuning.chosen.tta,
        "rescale": tuning.chosen.rescale,
        "nucleus_diameter": tuning.nucleus_diameter,
        "tile_size": tile_size,
        "ablation": tuning.ablation.reset_index().to_dict(orient="records"),
    }
    if metrics_path is not None:
        files.write_json(metrics_path, result)
    inference.write_settings(
        model_path,
        tuning.chosen.postprocess,
        tta=tuning.chosen.tta,
        tile_size=tile_size,
        rescale=tuning.chosen.rescale,
        nucleus_diameter=tuning.nucleus_diameter,
        validation_dsb_score=result["dsb_score"],
    )
    return result
