"""Evaluation metrics in numpy: pixel overlap, the DSB2018 instance score and distances.

Binary metrics take two boolean (or 0/1) masks of the same shape. Instance metrics take two
integer label images (0 background, each other value one object); label values need not be
consecutive. Objects are matched by IoU: for thresholds of 0.5 and above a true object can
overlap more than half with at most one predicted object, so matching is unambiguous.
"""

import numpy as np
from scipy import ndimage

# The Data Science Bowl 2018 thresholds: 0.50, 0.55, ..., 0.95.
DSB_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)


def _binary_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {y_true.shape} and {y_pred.shape}")
    return y_true, y_pred


def pixel_iou(y_true, y_pred) -> float:
    """Intersection over union of two binary masks.

    Parameters
    ----------
    y_true, y_pred : array_like
        Binary masks of the same shape.

    Returns
    -------
    float
        ``|A & B| / |A | B|``; 1.0 when both masks are empty.

    Examples
    --------
    >>> a = np.zeros((4, 4), bool); a[:, :2] = True
    >>> b = np.zeros((4, 4), bool); b[:, 1:3] = True
    >>> pixel_iou(a, b)
    0.3333333333333333
    """
    y_true, y_pred = _binary_pair(y_true, y_pred)
    union = np.count_nonzero(y_true | y_pred)
    return 1.0 if union == 0 else float(np.count_nonzero(y_true & y_pred) / union)


def dice(y_true, y_pred) -> float:
    """Dice coefficient (F1 over pixels) of two binary masks.

    Returns
    -------
    float
        ``2 |A & B| / (|A| + |B|)``; 1.0 when both masks are empty.

    Examples
    --------
    >>> a = np.zeros((4, 4), bool); a[:, :2] = True
    >>> b = np.zeros((4, 4), bool); b[:, 1:3] = True
    >>> dice(a, b)
    0.5
    """
    y_true, y_pred = _binary_pair(y_true, y_pred)
    total = np.count_nonzero(y_true) + np.count_nonzero(y_pred)
    return 1.0 if total == 0 else float(2.0 * np.count_nonzero(y_true & y_pred) / total)


def iou_matrix(true_labels, pred_labels) -> np.ndarray:
    """IoU of every true object with every predicted object.

    Returns
    -------
    numpy.ndarray
        ``(n_true, n_pred)`` float64, rows and columns in increasing label order.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2]])
    >>> p = np.array([[1, 0, 0, 2]])
    >>> iou_matrix(t, p)
    array([[0.5, 0. ],
           [0. , 1. ]])
    """
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise ValueError(f"shapes differ: {true_labels.shape} and {pred_labels.shape}")
    # Relabel both images to 0..N so one bincount over the pairs gives every intersection.
    true_ids, true_index = np.unique(true_labels, return_inverse=True)
    pred_ids, pred_index = np.unique(pred_labels, return_inverse=True)
    true_index, pred_index = true_index.ravel(), pred_index.ravel()
    true_offset = 1 if true_ids[0] == 0 else 0
    pred_offset = 1 if pred_ids[0] == 0 else 0
    n_true, n_pred = len(true_ids), len(pred_ids)
    counts = np.bincount(true_index * n_pred + pred_index, minlength=n_true * n_pred)
    intersection = counts.reshape(n_true, n_pred).astype(np.float64)
    area_true = intersection.sum(axis=1, keepdims=True)
    area_pred = intersection.sum(axis=0, keepdims=True)
    intersection = intersection[true_offset:, pred_offset:]
    union = area_true[true_offset:] + area_pred[:, pred_offset:] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def match_counts(true_labels, pred_labels, threshold: float = 0.5) -> tuple[int, int, int]:
    """Count true positives, false positives and false negatives at an IoU threshold.

    A predicted object is a true positive when its IoU with a true object is above
    ``threshold`` (strictly, as in the DSB2018 definition).

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2]])
    >>> p = np.array([[1, 0, 0, 2]])
    >>> match_counts(t, p, threshold=0.5)
    (1, 1, 1)
    """
    return _counts_from_iou(iou_matrix(true_labels, pred_labels), threshold)


def _counts_from_iou(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    if threshold < 0.5:
        raise ValueError(f"thresholds below 0.5 allow ambiguous matches; got {threshold}")
    hits = iou > threshold
    true_positives = int(np.count_nonzero(hits.any(axis=0)))
    return true_positives, iou.shape[1] - true_positives, iou.shape[0] - true_positives


def dsb_score(true_labels, pred_labels, thresholds=DSB_THRESHOLDS) -> float:
    """The Data Science Bowl 2018 score of one image.

    For each IoU threshold ``t`` in 0.50, 0.55, ..., 0.95 a predicted object is a hit when
    its IoU with a true object is above ``t``; the image scores
    ``TP / (TP + FP + FN)`` at each threshold and the mean over thresholds.

    Parameters
    ----------
    true_labels, pred_labels : array_like
        Integer instance-label images of the same shape.
    thresholds : sequence of float
        IoU thresholds, each at least 0.5.

    Returns
    -------
    float
        In [0, 1]; 1.0 when neither image has an object.

    Examples
    --------
    Two nuclei predicted as one merged object score zero at every threshold:

    >>> t = np.array([[1, 1, 0, 2, 2]])
    >>> p = np.array([[1, 1, 1, 1, 1]])
    >>> dsb_score(t, p)
    0.0
    >>> dsb_score(t, t)
    1.0
    """
    return _dsb_from_iou(iou_matrix(true_labels, pred_labels), thresholds)


def _dsb_from_iou(iou: np.ndarray, thresholds=DSB_THRESHOLDS) -> float:
    if iou.shape == (0, 0):
        return 1.0
    scores = []
    for threshold in thresholds:
        true_positives, false_positives, false_negatives = _counts_from_iou(iou, threshold)
        scores.append(true_positives / (true_positives + false_positives + false_negatives))
    return float(np.mean(scores))


def mean_dsb_score(pairs) -> float:
    """The DSB2018 score of a set of images: the mean of :func:`dsb_score` over images.

    Parameters
    ----------
    pairs : iterable of (true_labels, pred_labels)

    Examples
    --------
    >>> t = np.array([[1, 0, 2]])
    >>> mean_dsb_score([(t, t), (t, np.zeros_like(t))])
    0.5
    """
    scores = [dsb_score(true_labels, pred_labels) for true_labels, pred_labels in pairs]
    if not scores:
        raise ValueError("mean_dsb_score needs at least one image")
    return float(np.mean(scores))


def precision_recall_f1(true_labels, pred_labels, iou_threshold: float = 0.5) -> dict:
    """Object-level precision, recall and F1 at one IoU threshold.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (each 1.0 when there is nothing to find and
        nothing was found) and the counts ``tp``, ``fp``, ``fn``.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2]])
    >>> p = np.array([[1, 1, 0, 0]])
    >>> precision_recall_f1(t, p)["recall"]
    0.5
    """
    return _detection_from_iou(iou_matrix(true_labels, pred_labels), iou_threshold)


def _detection_from_iou(iou: np.ndarray, iou_threshold: float) -> dict:
    tp, fp, fn = _counts_from_iou(iou, iou_threshold)
    precision = tp / (tp + fp) if tp + fp else 1.0 if fn == 0 else 0.0
    recall = tp / (tp + fn) if tp + fn else 1.0 if fp == 0 else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


def hausdorff_distance(y_true, y_pred, percentile: float = 100.0) -> float:
    """Symmetric Hausdorff distance in pixels between the outlines of two binary masks.

    The distances from every outline pixel of each mask to the nearest outline pixel of the
    other are taken (the usual surface distances of medical image segmentation); the
    result is the larger of the two directions' ``percentile``. With 100 it is the
    Hausdorff distance; with 95 the HD95, which one stray pixel does not dominate.

    Returns
    -------
    float
        0.0 when both masks are empty and ``inf`` when only one is.

    Raises
    ------
    ValueError
        If ``percentile`` is not in [0, 100] or the shapes differ.

    Examples
    --------
    >>> a = np.zeros((5, 5), bool); a[2, 1] = True
    >>> b = np.zeros((5, 5), bool); b[2, 4] = True
    >>> hausdorff_distance(a, b)
    3.0
    >>> c = np.zeros((40, 40), bool); c[10:20, 10:20] = True
    >>> d = c.copy(); d[35, 35] = True  # One stray pixel.
    >>> hausdorff_distance(c, d) > 20, hausdorff_distance(c, d, percentile=95)
    (True, 0.0)
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    y_true, y_pred = _binary_pair(y_true, y_pred)
    if not y_true.any() and not y_pred.any():
        return 0.0
    if not y_true.any() or not y_pred.any():
        return float("inf")
    # The outline: mask pixels with a background pixel (or the image edge) among their four
    # neighbours. The Euclidean distance transform of an outline's complement gives, at
    # every pixel, the distance to that outline's nearest pixel.
    outline_true = y_true & ~ndimage.binary_erosion(y_true)
    outline_pred = y_pred & ~ndimage.binary_erosion(y_pred)
    to_pred = ndimage.distance_transform_edt(~outline_pred)[outline_true]
    to_true = ndimage.distance_transform_edt(~outline_true)[outline_pred]
    return float(max(np.percentile(to_pred, percentile), np.percentile(to_true, percentile)))


def semantic_scores(y_true, y_pred) -> dict:
    """The per-image numbers of a one-class (semantic) segmentation, such as a lung mask.

    Returns
    -------
    dict
        ``dice``, ``iou`` (pixel IoU), ``hausdorff`` and ``hausdorff_95`` (pixels; see
        :func:`hausdorff_distance`), ``true_pixels`` and ``predicted_pixels``.

    Examples
    --------
    >>> a = np.zeros((8, 8), bool); a[2:6, 2:6] = True
    >>> scores = semantic_scores(a, a)
    >>> scores["dice"], scores["iou"], scores["hausdorff"]
    (1.0, 1.0, 0.0)
    """
    y_true, y_pred = _binary_pair(y_true, y_pred)
    return {
        "dice": dice(y_true, y_pred),
        "iou": pixel_iou(y_true, y_pred),
        "hausdorff": hausdorff_distance(y_true, y_pred),
        "hausdorff_95": hausdorff_distance(y_true, y_pred, percentile=95.0),
        "true_pixels": int(np.count_nonzero(y_true)),
        "predicted_pixels": int(np.count_nonzero(y_pred)),
    }


def image_scores(true_labels, pred_labels) -> dict:
    """All per-image numbers the reports show, for one pair of label images.

    Returns
    -------
    dict
        ``dsb_score``, ``pixel_iou``, ``dice``, ``precision``/``recall``/``f1`` at IoU 0.5,
        ``true_count`` and ``pred_count``.

    Examples
    --------
    >>> t = np.array([[1, 1, 0, 2]])
    >>> image_scores(t, t)["dsb_score"], image_scores(t, t)["pred_count"]
    (1.0, 2)
    """
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    iou = iou_matrix(true_labels, pred_labels)
    detection = _detection_from_iou(iou, 0.5)
    return {
        "dsb_score": _dsb_from_iou(iou),
        "pixel_iou": pixel_iou(true_labels > 0, pred_labels > 0),
        "dice": dice(true_labels > 0, pred_labels > 0),
        "precision": detection["precision"],
        "recall": detection["recall"],
        "f1": detection["f1"],
        "true_count": iou.shape[0],
        "pred_count": iou.shape[1],
    }
