"""How far to trust a segmentation: a confidence per nucleus, an expected score per image.

The network says more about an image than its labels: how sure it is on each nucleus' pixels
and around its edge, and, with TTA, how much its 8 views of the image disagree. From these,

- per nucleus, :func:`nucleus_features` (the mean and spread of its probability, the share
  of its pixels below one half, the probability on the ring just outside it, its area
  against the image's median, its solidity, whether it touches the image's edge); a logistic
  regression turns them into ``confidence``: the chance that the nucleus matches a true one
  at IoU 0.5;
- per image, :func:`image_features` (the nuclei's confidences and the F1 score they imply,
  the share of uncertain pixels, the views' disagreement, the rescaling, the number and size
  of the nuclei, the image's colour); a linear model turns them into ``expected_dsb``, the
  DSB score the image would get if its labels were known, and ``reliable`` says whether it
  reaches :attr:`QualityModel.threshold`.

Both are fitted (:func:`fit`) on labelled images the network never trained on, and saved
beside the model as ``<model>.quality.json``; a second pair, fitted on predictions made
without TTA (so without the views' disagreement), serves those.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

NUCLEUS_FEATURES = (
    "mean_probability",
    "low_share",
    "edge_probability",
    "log_relative_area",
    "solidity",
    "at_edge",
    "spread",
)
IMAGE_FEATURES = (
    "mean_confidence",
    "low_confidence_share",
    "confidence_f1",
    "uncertain_share",
    "log_count",
    "coverage",
    "log_scale",
    "log_median_area",
    "colourfulness",
    "spread",
)
# The features that need the TTA views.
WITH_TTA = ("spread",)


def nucleus_features(
    labels: np.ndarray, probability: np.ndarray, spread: np.ndarray | None = None
) -> pd.DataFrame:
    """A row per nucleus of ``labels`` (in increasing label order) with ``NUCLEUS_FEATURES``.

    ``probability`` is the network's nucleus channel at the labels' size, ``spread`` the
    disagreement of the TTA views (:func:`unet_tf.inference.predict`); without it the
    ``spread`` column is NaN.
    """
    from skimage.measure import regionprops_table

    ids = np.unique(labels)
    ids = ids[ids > 0]
    columns = {"label": ids}
    if ids.size == 0:
        return pd.DataFrame({"label": ids, **{name: [] for name in NUCLEUS_FEATURES}})
    # Every label as an index 1..N into per-nucleus sums.
    index = np.searchsorted(ids, labels) + 1
    index[labels == 0] = 0
    length = ids.size + 1

    def mean(values, where_index):
        sums = np.bincount(where_index.ravel(), weights=values.ravel(), minlength=length)
        counts = np.bincount(where_index.ravel(), minlength=length)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (sums / counts)[1:]

    area = np.bincount(index.ravel(), minlength=length)[1:]
    columns["mean_probability"] = mean(probability, index)
    columns["low_share"] = mean((probability < 0.5).astype(np.float64), index)
    # The ring of pixels just outside each nucleus: a sure, clean edge has low probability
    # there; a nucleus cut out of a larger blob, or merged, does not.
    ring = ndimage.grey_dilation(index, size=3)
    ring[index > 0] = 0
    edge = mean(probability, ring)
    columns["edge_probability"] = np.where(np.isnan(edge), 0.0, edge)
    columns["log_relative_area"] = np.log(area / np.median(area))
    properties = regionprops_table(index, properties=("solidity", "bbox"))
    columns["solidity"] = properties["solidity"]
    height, width = labels.shape
    columns["at_edge"] = (
        (properties["bbox-0"] == 0)
        | (properties["bbox-1"] == 0)
        | (properties["bbox-2"] == height)
        | (properties["bbox-3"] == width)
    ).astype(np.float64)
    columns["spread"] = mean(spread, index) if spread is not None else np.full(ids.size, np.nan)
    return pd.DataFrame(columns)


def image_features(
    labels: np.ndarray,
    probability: np.ndarray,
    spread: np.ndarray | None,
    scale: float,
    image: np.ndarray,
) -> dict:
    """The image's ``IMAGE_FEATURES`` but the two of its nuclei's confidence (see
    :func:`with_confidence`); ``spread`` is NaN without TTA.

    ``probability`` and ``spread`` are the nucleus channel of the network's output and of
    the TTA views' disagreement, ``scale`` the rescaling the image was predicted at, and
    ``image`` the model input, ``(H, W, 3)`` in [0, 1].
    """
    foreground = probability > 0.25
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    unsure = float(np.mean(probability[foreground] < 0.75)) if foreground.any() else 1.0
    disagreement = (
        float(np.mean(spread[foreground])) if spread is not None and foreground.any() else np.nan
    )
    return {
        # Of the pixels the network calls possibly nucleus, the share it is unsure about.
        "uncertain_share": unsure,
        "log_count": float(np.log1p(areas.size)),
        "coverage": float(np.count_nonzero(labels) / labels.size),
        "log_scale": float(abs(np.log(scale))),
        "log_median_area": float(np.log(np.median(areas))) if areas.size else 0.0,
        # Stained tissue is coloured, fluorescence gray: the mean chroma.
        "colourfulness": float(np.mean(image.max(axis=-1) - image.min(axis=-1)))
        if image.ndim == 3
        else 0.0,
        "spread": disagreement,
    }


def with_confidence(features: dict, confidence: np.ndarray) -> dict:
    """``features`` of an image with the numbers of its nuclei's confidence added.

    ``confidence_f1`` is the F1 score at IoU 0.5 the confidences imply if as many nuclei
    were missed as were found wrongly: ``s / (2n - s)`` for ``n`` nuclei of total confidence
    ``s`` (expected true positives ``s``, false positives and negatives ``n - s`` each).
    """
    count, total = len(confidence), float(np.sum(confidence))
    return {
        **features,
        "mean_confidence": total / count if count else 0.0,
        "low_confidence_share": float(np.mean(confidence < 0.5)) if count else 1.0,
        "confidence_f1": total / (2 * count - total) if count else 0.0,
    }


@dataclass(frozen=True)
class Linear:
    """A linear model on standardised features: ``weights . (x - mean) / scale + bias``."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def __post_init__(self):
        # Read back from JSON the sequences are lists; a frozen model keeps tuples.
        for name in ("features", "mean", "scale", "weights"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        sizes = {len(self.features), len(self.mean), len(self.scale), len(self.weights)}
        if len(sizes) != 1:
            raise ValueError("a linear model needs one mean, scale and weight per feature")

    def __call__(self, table: pd.DataFrame | dict) -> np.ndarray:
        values = np.column_stack(
            [np.atleast_1d(np.asarray(table[name], np.float64)) for name in self.features]
        )
        standard = (values - np.asarray(self.mean)) / np.asarray(self.scale)
        return standard @ np.asarray(self.weights) + self.bias


@dataclass(frozen=True)
class QualityModel:
    """The fitted confidence and expected score, with TTA and without."""

    # Per nucleus: logit of matching a true nucleus at IoU 0.5.
    nucleus: Linear
    nucleus_without_tta: Linear
    # Per image: the expected DSB score.
    image: Linear
    image_without_tta: Linear
    # Images whose expected score is below this are flagged as not reliable.
    threshold: float
    # What it was fitted on, for the record.
    fitted_on: dict = field(default_factory=dict)

    def confidence(self, features: pd.DataFrame, tta: bool) -> np.ndarray:
        """Each nucleus' chance of matching a true one at IoU 0.5."""
        if len(features) == 0:
            return np.zeros(0)
        logit = (self.nucleus if tta else self.nucleus_without_tta)(features)
        return 1.0 / (1.0 + np.exp(-logit))

    def expected_dsb(self, features: dict, tta: bool) -> float:
        """The DSB score the image is expected to get, in [0, 1]."""
        value = (self.image if tta else self.image_without_tta)(features)[0]
        return float(np.clip(value, 0.0, 1.0))

    def save(self, path: str | Path) -> None:
        """Write the model as JSON, atomically."""
        from unet_tf import files

        files.write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "QualityModel":
        """Read a model :meth:`save` wrote.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            If it is not a quality model.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no quality estimate beside the model")
        try:
            saved = json.loads(path.read_text())
            linear = {
                name: Linear(**saved[name])
                for name in ("nucleus", "nucleus_without_tta", "image", "image_without_tta")
            }
            return cls(
                **linear, threshold=float(saved["threshold"]), fitted_on=saved.get("fitted_on", {})
            )
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a quality estimate ({error})") from error


def quality_path(model_path: str | Path) -> Path:
    """Where the quality estimate of a model is kept: ``<model>.quality.json``."""
    return Path(model_path).with_suffix(".quality.json")


def matched(true_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each nucleus of ``labels`` (increasing label order), whether it matches a true
    nucleus at IoU above 0.5."""
    from unet_tf import metrics

    iou = metrics.iou_matrix(true_labels, labels)
    if iou.shape[1] == 0:
        return np.zeros(0, bool)
    if iou.shape[0] == 0:
        return np.zeros(iou.shape[1], bool)
    return (iou > 0.5).any(axis=0)


def collect(net, samples, settings: dict, groups=None, progress: bool = False):
    """What :func:`fit` learns from: labelled ``samples`` ``(id, image, labels)`` the
    network never trained on, each predicted with TTA and without as ``settings`` say.

    Returns a table with a row per predicted nucleus (``NUCLEUS_FEATURES``, ``matched``,
    ``image``, ``tta``) and one with a row per image and TTA choice (the features of
    :func:`image_features`, ``dsb``, ``image``, ``tta`` and ``group``: ``groups[id]``, the
    image's source, when given).
    """
    from tqdm.auto import tqdm

    from unet_tf import inference, metrics

    nuclei, images = [], []
    for image_id, image, truth in tqdm(samples, disable=not progress):
        for tta in (True, False):
            chosen = {**settings, "tta": tta}
            output, scale, spread = inference.predict(net, image, chosen, spread=True)
            labels = inference.to_labels(output, chosen, scale)
            probability = output[..., 0]
            disagreement = spread[..., 0] if spread is not None else None
            table = nucleus_features(labels, probability, disagreement)
            table["matched"] = matched(truth, labels)
            table["image"], table["tta"] = image_id, tta
            nuclei.append(table)
            images.append(
                {
                    "image": image_id,
                    "group": groups[image_id] if groups is not None else "",
                    "tta": tta,
                    "dsb": metrics.dsb_score(truth, labels),
                    **image_features(labels, probability, disagreement, scale, image),
                }
            )
    return pd.concat(nuclei, ignore_index=True), pd.DataFrame(images)


def _fit_linear(
    table: pd.DataFrame, features, target, classify: bool, strength: float = 1.0
) -> Linear:
    from sklearn.linear_model import LogisticRegression, Ridge

    values = table[list(features)].to_numpy(np.float64)
    target = np.asarray(target, np.float64)
    if len(values) == 0 or (classify and len(np.unique(target)) < 2):
        # Nothing to learn from (a tiny run): a constant, the rate or mean seen (or a half).
        rate = float(target.mean()) if len(target) else 0.5
        bias = float(np.log((rate + 1e-3) / (1 - rate + 1e-3))) if classify else rate
        ones = (1.0,) * len(features)
        return Linear(tuple(features), (0.0,) * len(features), ones, (0.0,) * len(features), bias)
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    standard = (values - mean) / scale
    if classify:
        model = LogisticRegression(C=1.0 / strength, max_iter=1000).fit(standard, target)
        weights, bias = model.coef_[0], model.intercept_[0]
    else:
        model = Ridge(alpha=strength).fit(standard, target)
        weights, bias = model.coef_, model.intercept_
    return Linear(
        tuple(features),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in weights),
        float(bias),
    )


def fit(
    nuclei: pd.DataFrame,
    images: pd.DataFrame,
    threshold: float = 0.3,
    fitted_on: dict | None = None,
) -> QualityModel:
    """Fit the confidence and the expected score, with TTA and without.

    ``nuclei`` has a row per predicted nucleus with ``NUCLEUS_FEATURES``, ``matched`` (see
    :func:`matched`), ``image`` and ``tta`` (whether it was predicted with TTA); ``images``
    a row per image and ``tta`` with the features of :func:`image_features` and ``dsb``,
    its true score. Both must come from images the network never trained on.
    """
    fitted = {}
    for tta, suffix in ((True, ""), (False, "_without_tta")):
        features = (
            NUCLEUS_FEATURES if tta else tuple(n for n in NUCLEUS_FEATURES if n not in WITH_TTA)
        )
        rows = nuclei[nuclei["tta"] == tta]
        nucleus = _fit_linear(rows, features, rows["matched"].astype(int), classify=True)
        confidence = pd.Series(1 / (1 + np.exp(-nucleus(rows))), index=rows.index)
        per_image = images[images["tta"] == tta]
        table = pd.DataFrame(
            [
                with_confidence(row, confidence[rows["image"] == row["image"]].to_numpy())
                for row in per_image.to_dict("records")
            ]
        )
        names = IMAGE_FEATURES if tta else tuple(n for n in IMAGE_FEATURES if n not in WITH_TTA)
        fitted["nucleus" + suffix] = nucleus
        fitted["image" + suffix] = _fit_linear(table, names, table["dsb"], classify=False)
    return QualityModel(**fitted, threshold=threshold, fitted_on=fitted_on or {})


def judge(nuclei: pd.DataFrame, images: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Leave one group out: expected scores and confidences of each group (source) from an
    estimate fitted on the others, so that no image is judged by an estimate fitted on its
    own source. Returns the per-image rows with ``expected_dsb`` (none with fewer than two
    groups), and sets ``confidence`` in ``nuclei``."""
    rows = []
    nuclei["confidence"] = np.nan
    if images.group.nunique() < 2:
        return pd.DataFrame(columns=[*images.columns, "expected_dsb"])
    for group in images.group.unique():
        inside = images.group == group
        fitted = fit(nuclei[nuclei.image.isin(images.image[~inside])], images[~inside], threshold)
        for tta in (True, False):
            mine = nuclei.image.isin(images.image[inside]) & (nuclei.tta == tta)
            nuclei.loc[mine, "confidence"] = fitted.confidence(nuclei[mine], tta)
            for row in images[inside & (images.tta == tta)].to_dict("records"):
                confidence = nuclei.confidence[mine & (nuclei.image == row["image"])].to_numpy()
                features = with_confidence(row, confidence)
                rows.append({**row, "expected_dsb": fitted.expected_dsb(features, tta)})
    return pd.DataFrame(rows)


def numbers(images: pd.DataFrame, nuclei: pd.DataFrame, threshold: float) -> dict:
    """Spearman, the flagged images' shortfall and the nucleus AUC."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    if images.empty:
        return {"images": 0}
    flagged = images.expected_dsb < threshold
    matched = nuclei.matched.astype(bool)
    return {
        "images": len(images),
        "spearman": float(spearmanr(images.expected_dsb, images.dsb).statistic),
        "flagged": int(flagged.sum()),
        "flagged_dsb": float(images.dsb[flagged].mean()) if flagged.any() else None,
        "others_dsb": float(images.dsb[~flagged].mean()) if (~flagged).any() else None,
        "nuclei": len(nuclei),
        "nucleus_auc": float(roc_auc_score(matched, nuclei.confidence))
        if 0 < matched.sum() < len(matched)
        else None,
    }


def assess(
    estimate: QualityModel,
    labels: np.ndarray,
    output: np.ndarray,
    spread: np.ndarray | None,
    scale: float,
    image: np.ndarray,
) -> tuple[np.ndarray, dict]:
    """The confidence of each nucleus of ``labels`` (increasing label order) and the image's
    ``expected_dsb`` and ``reliable``; the estimate without TTA where ``spread`` is None."""
    tta = spread is not None
    probability = output[..., 0]
    disagreement = spread[..., 0] if tta else None
    confidence = estimate.confidence(nucleus_features(labels, probability, disagreement), tta)
    features = image_features(labels, probability, disagreement, scale, image)
    expected = estimate.expected_dsb(with_confidence(features, confidence), tta)
    return confidence, {"expected_dsb": expected, "reliable": expected >= estimate.threshold}
