"""Turn probability maps into instance labels: thresholds, connected components, watershed.

Three routes, compared in the results notebook:

* :func:`connected_components`: threshold the nucleus probability and label each connected
  blob. Touching nuclei stay merged, which the DSB score punishes hard.
* :func:`watershed_instances`: markers are the confident nucleus interiors (probability high
  and, where the model predicts borders, border probability low), or the peaks of the
  distance to the background where it does not; a marker-controlled watershed then grows
  them back over the whole thresholded mask, which splits touching nuclei along the valley
  between their markers.
* :func:`center_watershed`: for models trained on the ``center`` target, markers are where
  the predicted normalised distance to the nucleus edge is high, and nuclei grow from them
  down that map, which dips between touching nuclei however faint the line between them.

All fill holes inside objects and drop objects smaller than ``min_area`` pixels
(:data:`MIN_AREA` by default).
"""

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

# Objects smaller than this many pixels are dropped by default. It is the one default of the
# notebooks, the fallback inference settings and ``predict``, so that they segment alike.
MIN_AREA = 15


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber the objects of a label image as 1..N in order of their first pixel."""
    labels = np.asarray(labels)
    values, first = np.unique(labels.ravel(), return_index=True)
    order = values[np.argsort(first)]
    order = order[order != 0]
    lookup = np.zeros(int(values.max(initial=0)) + 1, dtype=np.int32)
    lookup[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lookup[labels]


def remove_small_objects(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop objects with fewer than ``min_area`` pixels and renumber the rest 1..N."""
    labels = np.asarray(labels, dtype=np.int32)
    if min_area > 1:
        areas = np.bincount(labels.ravel())
        small = areas < min_area
        small[0] = False
        labels = np.where(small[labels], 0, labels)
    return relabel_sequential(labels)


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background enclosed by objects with the label of the nearest object pixel."""
    labels = np.asarray(labels, dtype=np.int32)
    foreground = labels > 0
    holes = ndimage.binary_fill_holes(foreground) & ~foreground
    if not holes.any():
        return labels
    # The distance transform's indices give every pixel its nearest object pixel.
    _, (rows, cols) = ndimage.distance_transform_edt(~foreground, return_indices=True)
    filled = labels.copy()
    filled[holes] = labels[rows[holes], cols[holes]]
    return filled


def _check_probabilities(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim == 3:
        probabilities = probabilities[..., 0]
    if probabilities.ndim != 2:
        raise ValueError(f"expected a (height, width) probability map, got {probabilities.shape}")
    return probabilities


def connected_components(
    probabilities: np.ndarray, threshold: float = 0.5, min_area: int = MIN_AREA
) -> np.ndarray:
    """Instance labels from one nucleus probability map by thresholding and 8-connectivity.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(height, width)`` or ``(height, width, channels)``; channel 0 is used.
    threshold : float
        Pixels above it are nucleus.
    min_area : int
        Smaller objects are dropped.

    Returns
    -------
    numpy.ndarray
        int32 labels 0..N.
    """
    mask = _check_probabilities(probabilities) > threshold
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    return remove_small_objects(fill_holes(labels), min_area)


def watershed_instances(
    probabilities: np.ndarray,
    borders: np.ndarray | None = None,
    threshold: float = 0.5,
    marker_threshold: float = 0.7,
    border_threshold: float = 0.3,
    min_distance: float = 3.0,
    min_area: int = MIN_AREA,
) -> np.ndarray:
    """Instance labels by a marker-controlled watershed that splits touching nuclei.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(height, width)`` nucleus probability.
    borders : numpy.ndarray, optional
        ``(height, width)`` probability of nucleus borders (and the contact lines between
        touching nuclei). Markers are then the pixels with nucleus probability above
        ``marker_threshold`` and border probability below ``border_threshold``. Without
        borders, markers are the regional maxima of the distance to the background that
        rise at least ``min_distance`` pixels.
    threshold : float
        The mask that markers grow over: nucleus probability above it.
    min_area : int
        Markers and objects smaller than this are dropped.

    Returns
    -------
    numpy.ndarray
        int32 labels 0..N.
    """
    probabilities = _check_probabilities(probabilities)
    mask, blobs = _watershed_mask(probabilities, threshold)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    if borders is not None:
        borders = _check_probabilities(borders)
        seeds = (probabilities > marker_threshold) & (borders < border_threshold) & mask
        markers, _ = ndimage.label(seeds)
        # Tiny markers are noise; their pixels are reached by the watershed anyway.
        markers = remove_small_objects(markers, max(1, min_area // 4))
        elevation = -(probabilities - borders)
    else:
        distance = ndimage.distance_transform_edt(mask)
        markers = _distance_peaks(distance, min_distance, blobs)
        elevation = -distance
    return _grow(elevation, markers, mask, blobs, min_area)


def _watershed_mask(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The mask a watershed grows markers over (nucleus probability above ``threshold``,
    holes filled) and its 8-connected blobs."""
    mask = ndimage.binary_fill_holes(probabilities > threshold)
    blobs, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    return mask, blobs


def _grow(
    elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray, blobs: np.ndarray, min_area: int
) -> np.ndarray:
    """Watershed of ``elevation`` from ``markers`` over ``mask``, then holes filled and small
    objects dropped; ``blobs`` are the 8-connected labels of ``mask``."""
    # A blob without any marker would vanish: it becomes one object of its own.
    unmarked = np.setdiff1d(np.unique(blobs[mask]), np.unique(blobs[markers > 0]))
    if unmarked.size:
        extra = np.isin(blobs, unmarked)
        markers = np.where(extra, blobs + markers.max(), markers)
    labels = watershed(elevation, markers, mask=mask)
    return remove_small_objects(fill_holes(labels), min_area)


def center_watershed(
    probabilities: np.ndarray,
    centers: np.ndarray,
    threshold: float = 0.5,
    marker_threshold: float = 0.5,
    min_area: int = MIN_AREA,
) -> np.ndarray:
    """Instance labels grown from predicted nucleus centres by a watershed.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(height, width)`` nucleus probability.
    centers : numpy.ndarray
        ``(height, width)`` predicted normalised distance to the nucleus edge (1 at a
        nucleus's centre, near 0 where two nuclei meet; see ``pipeline.center_distance``).
    threshold : float
        The mask that markers grow over: nucleus probability above it.
    marker_threshold : float
        Markers are the connected regions of the mask where ``centers`` is above it. The map
        is normalised per nucleus, so one value suits nuclei of every size.
    min_area : int
        Objects smaller than this are dropped.

    Returns
    -------
    numpy.ndarray
        int32 labels 0..N.

    Examples
    --------
    Two touching discs, with their true centre map, come out as two nuclei:

    >>> yy, xx = np.mgrid[:20, :30]
    >>> left = np.hypot(yy - 10, xx - 9)
    >>> right = np.hypot(yy - 10, xx - 20)
    >>> nucleus = ((left <= 6) | (right <= 6)).astype(np.float32)
    >>> centers = np.clip(1 - np.minimum(left, right) / 6, 0, 1) * nucleus
    >>> int(center_watershed(nucleus, centers, marker_threshold=0.5, min_area=5).max())
    2
    """
    probabilities = _check_probabilities(probabilities)
    centers = _check_probabilities(centers)
    mask, blobs = _watershed_mask(probabilities, threshold)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    # Markers are not filtered by size: the centre of a small nucleus is a few pixels, and
    # dropping it would merge the nucleus into its neighbour.
    markers, _ = ndimage.label((centers > marker_threshold) & mask)
    return _grow(-centers, markers, mask, blobs, min_area)


def _distance_peaks(distance: np.ndarray, height: float, blobs: np.ndarray) -> np.ndarray:
    """Markers at regional maxima of ``distance`` that stand ``height`` above their surroundings.

    This is the h-maxima transform: reconstruct ``distance - height`` under ``distance``
    by dilation; what the reconstruction cannot reach are the peaks. The reconstruction
    never crosses the background, so each blob of ``blobs`` (8-connected labels of the
    mask) is reconstructed alone in its bounding box, which gives the same peaks about
    three times faster than one pass over the whole image.
    """
    from skimage.morphology import reconstruction

    peaks = np.zeros(distance.shape, bool)
    for index, box in enumerate(ndimage.find_objects(blobs), start=1):
        if box is None:
            continue
        blob = np.where(blobs[box] == index, distance[box], 0.0)
        lowered = np.maximum(blob - height, 0)
        peaks[box] |= (blob - reconstruction(lowered, blob, method="dilation")) > 1e-6
    markers, _ = ndimage.label(peaks, structure=np.ones((3, 3)))
    return markers


# The channels of a model's output, in order. Each training target adds the next one (see
# ``unet_tf.pipeline.TARGETS``): ``binary`` gives the first, ``border`` the first two and
# ``center`` all three. Every place that reads channels by position reads this table.
CHANNEL_NAMES = ("nucleus", "border", "center")

# The last channel each method reads; the output needs every channel up to that one.
METHOD_CHANNELS = {
    "components": "nucleus",
    "watershed_distance": "nucleus",
    "watershed_border": "border",
    "watershed_center": "center",
}
METHODS = tuple(METHOD_CHANNELS)


def channel_names(count: int) -> list[str]:
    """The names of an output's ``count`` channels, in order (see :data:`CHANNEL_NAMES`).

    Channels past the known ones are named ``channel<i>``.
    """
    if count < 1:
        raise ValueError(f"an output has at least one channel, got {count}")
    known = list(CHANNEL_NAMES[:count])
    return known + [f"channel{index}" for index in range(len(known), count)]


def methods_for(count: int) -> tuple[str, ...]:
    """The methods of :data:`METHODS` that an output with ``count`` channels can use."""
    present = set(channel_names(count))
    return tuple(method for method, channel in METHOD_CHANNELS.items() if channel in present)


def separation_method(count: int) -> str | None:
    """The watershed on the last separation channel of an output with ``count`` channels.

    That is the method an untuned model is post-processed with: ``watershed_center`` for a
    model trained on ``center``, ``watershed_border`` for ``border``, and None for a
    nucleus-only model, which has no channel that separates touching nuclei.
    """
    separating = [method for method in methods_for(count) if METHOD_CHANNELS[method] != "nucleus"]
    return separating[-1] if separating else None


def to_instances(probabilities: np.ndarray, method: str = "components", **settings) -> np.ndarray:
    """Instance labels from a model's ``(height, width, channels)`` output by a named method.

    ``components`` and ``watershed_distance`` use the nucleus channel; ``watershed_border``
    also uses the border channel and needs a model trained on the ``border`` target;
    ``watershed_center`` uses the centre channel of a model trained on ``center`` (the
    channels are in the order of :data:`CHANNEL_NAMES`). ``settings`` are passed on
    (``threshold``, ``min_area``, ...).

    Raises
    ------
    ValueError
        If the method is unknown or needs a channel the output does not have.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim == 2:
        probabilities = probabilities[..., None]
    if method not in METHOD_CHANNELS:
        raise ValueError(f"unknown post-processing method {method!r}; choose one of {METHODS}")
    if method not in methods_for(probabilities.shape[-1]):
        # The channel names are the names of the targets that add them.
        channel = METHOD_CHANNELS[method]
        raise ValueError(f"{method} needs a {channel} channel (train with target='{channel}')")
    names = channel_names(probabilities.shape[-1])
    channel = dict(zip(names, np.moveaxis(probabilities, -1, 0), strict=True))
    if method == "components":
        return connected_components(channel["nucleus"], **settings)
    if method == "watershed_distance":
        return watershed_instances(channel["nucleus"], **settings)
    if method == "watershed_border":
        return watershed_instances(channel["nucleus"], borders=channel["border"], **settings)
    return center_watershed(channel["nucleus"], channel["center"], **settings)
