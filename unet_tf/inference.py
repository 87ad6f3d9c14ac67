"""Full-resolution inference for images of any size: tiling with smooth blending, and TTA.

Images that fit in one tile are padded (by reflection) to a multiple of ``2**depth`` and
predicted in one pass. Larger images are cut into the fewest overlapping tiles that cover
them, predicted in batches, and blended with weights that ramp down linearly across the
overlap, so tile seams do not show and memory depends on the tile size, not the image size.

Test-time augmentation (TTA) predicts the 8 flips and 90-degree rotations of the input,
undoes each transform on its prediction and averages them.
"""

import json
from pathlib import Path

import numpy as np

from unet_tf import appearance, files
from unet_tf.model import crop_to_shape, model_channels, model_depth, pad_to_shape
from unet_tf.postprocess import MIN_AREA, to_instances

DIHEDRAL = tuple(range(8))


def dihedral(array: np.ndarray, transform: int) -> np.ndarray:
    """Apply one of the 8 flips/rotations (0 = identity) to the first two axes."""
    if transform >= 4:
        array = array[:, ::-1]
    return np.rot90(array, transform % 4, axes=(0, 1))


def inverse_dihedral(array: np.ndarray, transform: int) -> np.ndarray:
    """Undo :func:`dihedral` with the same ``transform``."""
    array = np.rot90(array, -(transform % 4), axes=(0, 1))
    if transform >= 4:
        array = array[:, ::-1]
    return array


def _predict_batch(model, batch: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(np.ascontiguousarray(batch, dtype=np.float32)))


def axis_tiles(size: int, tile_size: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """Tile side and start offsets along one axis of ``size`` pixels.

    An axis whose padded size fits in ``tile_size`` is one tile of that padded size. A
    longer axis gets the fewest tiles of at most ``tile_size`` that overlap by at least
    ``overlap``, each made only as long as that needs (a multiple of ``multiple``) and
    spread evenly. Tiles sized to the image waste little: 2048 pixels take three tiles of
    768, not three of 1024.

    With ``overlap=0`` and ``multiple=tile_size`` every tile is ``tile_size`` long: that is
    how :func:`unet_tf.pipeline.make_validation_dataset` places its validation crops.
    """
    if -(-size // multiple) * multiple <= tile_size:
        return -(-size // multiple) * multiple, [0]
    count = -(-(size - overlap) // (tile_size - overlap))
    tile = -(-(size + (count - 1) * overlap) // count)
    tile = min(tile_size, -(-tile // multiple) * multiple)
    return tile, [round(index * (size - tile) / (count - 1)) for index in range(count)]


def blend_window(tile: int | tuple[int, int], overlap: int) -> np.ndarray:
    """Tile weights: 1 in the middle, ramping linearly to near 0 over ``overlap`` pixels.

    ``tile`` is the side of a square tile or the ``(height, width)`` of a rectangular one.
    """
    height, width = (tile, tile) if isinstance(tile, int) else tile

    def ramp(length: int) -> np.ndarray:
        weights = np.ones(length, np.float32)
        edge = min(overlap, length)
        if edge > 0:
            rising = (np.arange(edge, dtype=np.float32) + 0.5) / edge
            weights[:edge] = rising
            weights[-edge:] = np.minimum(weights[-edge:], rising[::-1])
        return weights

    return np.outer(ramp(height), ramp(width))


def check_tile_size(model, tile_size: int) -> int:
    """Check that ``tile_size`` suits ``model``; returns the multiple image sides pad to.

    Raises
    ------
    ValueError
        If the tile size is not a positive multiple of ``2**depth``.
    """
    multiple = 2 ** model_depth(model)
    if tile_size % multiple or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive multiple of {multiple}, got {tile_size}")
    return multiple


# Tiles are batched up to about this many pixels per model call: throughput on the CPU is
# the same for one 1024x1024 tile as for four of 512x512, and memory grows with the batch.
BATCH_PIXELS = 1024 * 1024


def predict_full(
    model,
    image: np.ndarray,
    tile_size: int = 1024,
    overlap: int | None = None,
    tta: bool = False,
    batch_size: int | None = None,
    stats: np.ndarray | None = None,
    spread: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predict an image of any size at full resolution.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`unet_tf.model.get_model`, or an exported model with a
        ``predict_on_batch`` method and a ``depth`` attribute.
    image : numpy.ndarray
        ``(height, width, channels)`` float32.
    tile_size : int
        Largest tile side; a multiple of ``2**depth``. Images whose padded size fits in one
        tile are predicted whole; larger ones in the fewest overlapping tiles that cover
        them (see :func:`axis_tiles`). Memory grows with the tile, not the image.
    overlap : int, optional
        Least number of pixels shared by neighbouring tiles, blended smoothly; by default
        an eighth of ``tile_size`` (128 pixels for 1024-pixel tiles).
    tta : bool
        Average over the 8 flips and rotations.
    batch_size : int, optional
        Tiles (or transformed copies of a tile) per model call; by default as many as fit
        in about one megapixel.
    stats : numpy.ndarray, optional
        Normalisation statistics of the whole image (:func:`unet_tf.appearance.statistics`)
        when ``image`` is one block of a larger one (see :mod:`unet_tf.large`); by default
        they are computed on ``image``.
    spread : bool
        Also return how much the 8 views of TTA disagree: the standard deviation of their
        outputs, per pixel and class (zero without TTA).

    Returns
    -------
    numpy.ndarray
        ``(height, width, num_classes)`` float32; with ``spread``, a pair of such arrays, the
        mean and the spread.

    Raises
    ------
    ValueError
        If the image is not 3-D or the tiling arguments do not fit the model.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (height, width, channels), got shape {image.shape}")
    multiple = check_tile_size(model, tile_size)
    if overlap is None:
        overlap = tile_size // 8
    if not 0 <= overlap < tile_size // 2:
        raise ValueError(f"overlap must be in [0, tile_size / 2), got {overlap}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    # The model's input representation, computed on the whole image before it is tiled, so
    # every tile is normalised alike (see unet_tf.appearance).
    image = appearance.to_model_input(image, model_channels(model), stats)
    transforms = DIHEDRAL if tta else (0,)
    height, width = image.shape[:2]
    tile_height, tops = axis_tiles(height, tile_size, overlap, multiple)
    tile_width, lefts = axis_tiles(width, tile_size, overlap, multiple)
    if batch_size is None:
        batch_size = max(1, BATCH_PIXELS // (tile_height * tile_width))

    # Pad short sides (by reflection) up to one tile, so every tile is whole.
    padded, shape = pad_to_shape(image, (tile_height, tile_width))
    # A lone tile is not blended: a flat window leaves the plain average of the transforms.
    window = np.ones((tile_height, tile_width, 1), np.float32)
    if len(tops) * len(lefts) > 1:
        window = blend_window((tile_height, tile_width), overlap)[..., None]

    # Each work item is one transformed tile. A quarter turn swaps the sides of a
    # rectangular tile, so batches take items of one orientation at a time.
    origins = [(top, left) for top in tops for left in lefts]
    total = weights = squares = None
    for turned in (False, True):
        items = [
            (origin, transform)
            for origin in origins
            for transform in transforms
            if (transform % 2 == 1) == turned
        ]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = np.stack(
                [
                    dihedral(padded[top : top + tile_height, left : left + tile_width], transform)
                    for (top, left), transform in chunk
                ]
            )
            predictions = _predict_batch(model, batch)
            if total is None:
                total = np.zeros((*padded.shape[:2], predictions.shape[-1]), np.float32)
                weights = np.zeros((*padded.shape[:2], 1), np.float32)
                squares = np.zeros_like(total) if spread else None
            for ((top, left), transform), prediction in zip(chunk, predictions, strict=True):
                prediction = inverse_dihedral(prediction, transform)
                total[top : top + tile_height, left : left + tile_width] += prediction * window
                weights[top : top + tile_height, left : left + tile_width] += window
                if spread:
                    squares[top : top + tile_height, left : left + tile_width] += (
                        prediction**2 * window
                    )
    mean = total / weights
    if not spread:
        return crop_to_shape(mean, shape)
    deviation = np.sqrt(np.maximum(squares / weights - mean**2, 0.0))
    return crop_to_shape(mean, shape), crop_to_shape(deviation, shape)


# Used when a model has no tuned settings beside it: the method that needs only channel 0,
# at the threshold a sigmoid output is trained around.
FALLBACK_SETTINGS = {
    "postprocess": {"method": "components", "threshold": 0.5, "min_area": MIN_AREA},
    "tta": False,
    "tile_size": 1024,
    "rescale": False,
    "nucleus_diameter": None,
}

# Automatic rescaling: images are resampled only when their nuclei differ from the training
# size by more than this factor; they are enlarged by at most MAX_SCALE (memory grows with
# its square) and shrunk by at most MAX_SHRINK, so that nuclei of six times the training
# size (about 100 pixels across) still come to it.
SCALE_TOLERANCE = 1.25
MAX_SCALE = 4.0
MAX_SHRINK = 8.0


def bounded_scale(factor: float) -> float:
    """``factor`` kept within the automatic rescaling's bounds: ``1 / MAX_SHRINK`` to
    ``MAX_SCALE``."""
    return float(np.clip(factor, 1 / MAX_SHRINK, MAX_SCALE))


def resize(array: np.ndarray, shape: tuple[int, int], sharp: bool = False) -> np.ndarray:
    """Bilinear resampling of ``(height, width, channels)`` to ``shape`` (antialiased).

    With ``sharp``, an enlargement uses a Lanczos kernel instead, clipped to the range of
    ``array`` (it overshoots at edges). That is for images enlarged before the network sees
    them: their nuclei are small, and the sharper edges between them are worth 0.01 DSB on
    the scale check at 0.5x (0.003 at 1x) against bilinear enlargement.
    """
    import tensorflow as tf

    if tuple(array.shape[:2]) == tuple(shape):
        return array
    if sharp and shape[0] * shape[1] > array.shape[0] * array.shape[1]:
        resized = tf.image.resize(array, shape, method="lanczos3").numpy()
        low, high = array.min(axis=(0, 1)), array.max(axis=(0, 1))
        return np.clip(resized, low, high).astype(np.float32)
    resized = tf.image.resize(array, shape, method="bilinear", antialias=True)
    return resized.numpy().astype(np.float32)


def scaled_shape(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    """The ``(height, width)`` of an image of ``shape`` resampled by ``scale`` (at least 1)."""
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _resample_sample(sample: tuple, factor: float, sharp: bool = False) -> tuple:
    """One ``(image_id, image, labels)`` sample resampled by ``factor`` (see
    :func:`resample_samples`)."""
    if factor == 1.0:
        return sample
    import tensorflow as tf

    image_id, image, labels = sample
    shape = scaled_shape(image.shape, factor)
    nearest = tf.image.resize(labels[..., None], shape, method="nearest").numpy()[..., 0]
    return image_id, resize(image, shape, sharp=sharp), nearest.astype(np.int32)


def resample_samples(samples: list, factor: float) -> list:
    """``(image_id, image, labels)`` samples resampled by ``factor``: images bilinear (see
    :func:`resize`), labels nearest neighbour, so they stay whole labels."""
    if factor == 1.0:
        return samples
    return [_resample_sample(sample, factor) for sample in samples]


def size_factors(samples: list, nucleus_diameter: float) -> list[float]:
    """The factor that brings each labelled sample's nuclei to ``nucleus_diameter``: the one
    the automatic rescaling would give it if its first pass found the nuclei its labels
    hold (:func:`rescale_factor` of their median inscribed diameter).

    Raises
    ------
    ValueError
        If ``nucleus_diameter`` is not positive.
    """
    if not nucleus_diameter > 0:
        raise ValueError(f"nucleus_diameter must be positive, got {nucleus_diameter!r}")
    return [rescale_factor(median_diameter(labels), nucleus_diameter) for *_, labels in samples]


def size_normalised_samples(samples: list, nucleus_diameter: float) -> list:
    """Labelled samples each resampled so that its nuclei come to ``nucleus_diameter``.

    Every image is resampled by its :func:`size_factors` factor as inference resamples
    (enlargements sharp), so that a network scored on them sees nuclei at the size every
    new image is brought to.

    Raises
    ------
    ValueError
        If ``nucleus_diameter`` is not positive.
    """
    factors = size_factors(samples, nucleus_diameter)
    return [
        _resample_sample(sample, factor, sharp=True)
        for sample, factor in zip(samples, factors, strict=True)
    ]


def inscribed_diameters(labels: np.ndarray) -> np.ndarray:
    """Twice the radius of the largest circle inside each object of a label image.

    Unlike the equivalent diameter of an object's area, it is the size of one nucleus even
    where touching nuclei were merged into one object, and of the nucleus where a nucleus
    came out with holes or ragged edges: what size estimation needs from a first pass.
    """
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    count = int(labels.max(initial=0))
    if count == 0:
        return np.zeros(0)
    # Touching objects are parted by their boundaries, so each is measured on its own.
    inside = (labels > 0) & ~find_boundaries(labels, mode="inner")
    distance = ndimage.distance_transform_edt(inside)
    radii = ndimage.maximum(distance, labels, index=np.arange(1, count + 1))
    present = np.bincount(labels.ravel(), minlength=count + 1)[1:] > 0
    return 2.0 * (np.asarray(radii)[present] + 0.5)


def median_diameter(labels: np.ndarray) -> float | None:
    """Median :func:`inscribed_diameters` of a label image's objects; None without objects."""
    diameters = inscribed_diameters(labels)
    return float(np.median(diameters)) if diameters.size else None


# Fixed post-processing for measuring nucleus sizes, the same whatever was tuned: connected
# components of the nucleus channel. A splitting method would cut nuclei far larger than the
# training ones into pieces and make them look small, while merged touching nuclei still
# give the right size through inscribed_diameters.
_SIZE_PROBE = {"method": "components", "threshold": 0.5, "min_area": MIN_AREA}


# Probes for nuclei far larger than the training ones (see estimate_scale): an image whose
# first pass finds only small nuclei is also segmented at these scales, if every probe keeps
# at least PROBE_MIN_SIDE pixels on its short side (images of 1024 pixels or more).
PROBE_SCALES = (0.5, 0.25)
PROBE_MIN_SIDE = 256


def rescale_factor(diameter: float | None, nucleus_diameter: float) -> float:
    """The factor that brings nuclei of ``diameter`` pixels to ``nucleus_diameter``: 1.0
    (left as they are) within ``SCALE_TOLERANCE`` or without nuclei, and never beyond
    ``MAX_SCALE`` up nor ``MAX_SHRINK`` down."""
    if not diameter:
        return 1.0
    factor = bounded_scale(nucleus_diameter / diameter)
    return factor if not 1 / SCALE_TOLERANCE <= factor <= SCALE_TOLERANCE else 1.0


def _measure(model, image, scale, tile_size, output=None):
    """A size pass at ``scale``: the median nucleus diameter (in the pass' pixels), the
    objects' area in the image's own pixels, and the share of the nucleus pixels the
    network is sure of (probability above 0.9 of those above 0.5)."""
    if output is None:
        scaled = image
        if scale != 1.0:
            scaled = resize(image, scaled_shape(image.shape, scale), sharp=True)
        output = predict_full(model, scaled, tile_size=tile_size)
    labels = to_instances(output, **_SIZE_PROBE)
    nucleus = output[..., 0]
    sure = float((nucleus > 0.9).sum() / max(int((nucleus > 0.5).sum()), 1))
    return median_diameter(labels), float((labels > 0).sum()) / scale**2, sure


def estimate_scale(
    model,
    image: np.ndarray,
    nucleus_diameter: float,
    tile_size: int = 1024,
    rounds: int = 2,
    first_output: np.ndarray | None = None,
) -> float:
    """The factor that brings an image's nuclei to ``nucleus_diameter`` pixels across.

    A first pass (without TTA) segments the image and measures the median nucleus
    diameter; if it differs from ``nucleus_diameter`` by more than ``SCALE_TOLERANCE`` the
    image is resampled and measured again, up to ``rounds`` times, as Cellpose estimates
    diameters. The result lies in ``[1 / MAX_SHRINK, MAX_SCALE]``; 1.0 means "leave the
    image as it is". ``first_output``, the image's plain output at its own scale
    (:func:`predict_full` without TTA) when the caller has it, saves the first pass.

    A network cuts nuclei far larger than it was trained on into pieces, which look like
    small nuclei and would have the image enlarged. So when the first pass finds nuclei
    smaller than the training size (or none), a large image is also segmented at the
    ``PROBE_SCALES``, and the probes are believed instead if both show whole nuclei where
    the first pass showed pieces: at each probe the objects cover at least 1.5 times the
    area and the network is at least as sure of its nucleus pixels, and the two probes
    agree on the nuclei's size in the image's own pixels (within a factor of
    ``sqrt(2)``). The last condition tells large nuclei from cells or tissue that the
    network takes for nuclei once an image is shrunk: those look the same size at every
    probe, so their size in the image's own pixels doubles from one probe to the next.
    The rounds then start from the probe whose nuclei come closest to
    ``nucleus_diameter``.

    A first pass that found pieces where the probes did not help (or were not made) would
    have the image enlarged for them. So a round that enlarges the image is believed only
    if its nuclei grew with it (:func:`_grew_with_image`); otherwise the scale before it
    is kept.
    """
    if not nucleus_diameter or nucleus_diameter <= 0:
        raise ValueError(f"nucleus_diameter must be positive, got {nucleus_diameter!r}")
    diameter, area, sure = _measure(model, image, 1.0, tile_size, first_output)
    scale = 1.0
    large_enough = min(image.shape[:2]) * min(PROBE_SCALES) >= PROBE_MIN_SIDE
    if large_enough and (diameter is None or diameter < nucleus_diameter / SCALE_TOLERANCE):
        probes = [(probe, *_measure(model, image, probe, tile_size)) for probe in PROBE_SCALES]
        whole = all(
            found and found_area >= 1.5 * area and found_sure >= sure
            for _, found, found_area, found_sure in probes
        )
        if whole:
            own_sizes = [found / probe for probe, found, _, _ in probes]
            if max(own_sizes) <= np.sqrt(2) * min(own_sizes):
                _, scale, diameter = min(
                    (abs(np.log(found / nucleus_diameter)), probe, found)
                    for probe, found, _, _ in probes
                )
    for round_ in range(rounds):
        if diameter is None:
            break
        step = nucleus_diameter / diameter
        if 1 / SCALE_TOLERANCE <= step <= SCALE_TOLERANCE:
            break
        before = scale, diameter
        scale = bounded_scale(scale * step)
        if round_ < rounds - 1:
            diameter = _measure(model, image, scale, tile_size)[0]
            if not _grew_with_image(before, (scale, diameter)):
                scale = before[0]
                break
    return scale if not 1 / SCALE_TOLERANCE <= scale <= SCALE_TOLERANCE else 1.0


# Nuclei measured in an image enlarged for them may come out at most this factor smaller in
# the image's own pixels than before (see _grew_with_image).
SIZE_AGREEMENT = np.sqrt(2)


def _grew_with_image(before: tuple, after: tuple) -> bool:
    """Whether the objects of a size pass at a larger scale grew with the image.

    ``before`` and ``after`` are ``(scale, diameter)`` of two passes. Real nuclei grow with
    the image: their diameter divided by the scale stays put. Pieces of nuclei far larger
    than the training ones, cut up by the network, keep one size in the network's pixels
    whatever the scale, so in the image's own pixels they shrink by the very factor the
    image was enlarged by: an enlargement chosen from them is wrong. (A pass at a smaller
    scale is believed: there pieces join into whole nuclei, which look larger.)
    """
    (scale_before, diameter_before), (scale_after, diameter_after) = before, after
    if scale_after <= scale_before:
        return True
    if not diameter_after:
        return False
    ratio = (diameter_after / scale_after) / (diameter_before / scale_before)
    return bool(ratio >= 1 / SIZE_AGREEMENT)


def image_scale(
    model, image: np.ndarray, settings: dict, first_output: np.ndarray | None = None
) -> float:
    """The resampling factor ``settings`` ask for an image (1.0: none).

    ``settings["rescale"]`` turns rescaling on; the target is the training nucleus size
    ``settings["nucleus_diameter"]``. A known size of the image's nuclei,
    ``settings["image_nucleus_diameter"]`` (``predict --nucleus-diameter``), gives the
    factor directly; otherwise it is estimated (:func:`estimate_scale`, which reuses
    ``first_output``, the plain output at the image's own scale, if given). Without
    rescaling, a model trained on resampled images (``input_scale`` of its training, e.g.
    0.5 for CT slices) gets its images resampled by the same factor.
    """
    target = settings.get("nucleus_diameter")
    if not settings.get("rescale") or not target:
        return float(settings.get("input_scale", 1.0))
    if _estimated(settings):
        return estimate_scale(
            model, image, target, settings["tile_size"], first_output=first_output
        )
    return bounded_scale(target / settings["image_nucleus_diameter"])


def _estimated(settings: dict) -> bool:
    """Whether ``settings`` ask for the scale of an image to be estimated from a first pass."""
    rescaling = settings.get("rescale") and settings.get("nucleus_diameter")
    return bool(rescaling) and not settings.get("image_nucleus_diameter")


def predict(
    model,
    image: np.ndarray,
    settings: dict,
    scale: float | None = None,
    stats=None,
    spread: bool = False,
):
    """The network's output for an image at its own size, rescaled as ``settings`` say.

    The image is resampled by the factor of :func:`image_scale` (or ``scale``), predicted
    (:func:`predict_full`, with TTA if asked), and the output resampled back, so labels
    always come at the image's own size. ``stats`` are the normalisation statistics of the
    whole image when ``image`` is a block of it. Returns ``(output, scale)``; with
    ``spread``, ``(output, scale, spread)``, the disagreement of the TTA views per pixel
    (None without TTA).
    """
    plain = None
    if scale is None:
        if _estimated(settings):
            # The estimate's first pass is the plain prediction; without TTA at scale 1 it
            # is also the answer.
            plain = predict_full(model, image, tile_size=settings["tile_size"])
        scale = image_scale(model, image, settings, first_output=plain)
        if scale == 1.0 and plain is not None and not settings["tta"]:
            return (plain, scale, None) if spread else (plain, scale)
    shape = image.shape[:2]
    scaled = resize(image, scaled_shape(shape, scale), sharp=True) if scale != 1.0 else image
    with_spread = spread and settings["tta"]
    output = predict_full(
        model,
        scaled,
        tile_size=settings["tile_size"],
        tta=settings["tta"],
        stats=stats,
        spread=with_spread,
    )
    output, deviation = output if with_spread else (output, None)
    if scale != 1.0:
        output = resize(output, shape)
        deviation = resize(deviation, shape) if deviation is not None else None
    return (output, scale, deviation) if spread else (output, scale)


def settings_path(model_path: str | Path) -> Path:
    """Where the tuned inference settings of a model live: ``<model>.inference.json``."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.inference.json")


def write_settings(
    model_path: str | Path, postprocess: dict, tta: bool, tile_size: int, **extra
) -> Path:
    """Store the post-processing, TTA and tile size chosen for a model beside it.

    ``03-results`` tunes them on the validation split; ``04-submission``, ``predict`` and
    the Kaggle kernel read them back with :func:`read_settings`, so that every use of a
    model segments the same way. ``extra`` (scores, say) is stored for the record.
    """
    if "method" not in postprocess:
        raise ValueError("postprocess needs a 'method' (see unet_tf.postprocess.METHODS)")
    path = settings_path(model_path)
    files.write_json(
        path, {"postprocess": postprocess, "tta": bool(tta), "tile_size": int(tile_size), **extra}
    )
    return path


def read_settings(model_path: str | Path) -> dict:
    """Read the settings written by :func:`write_settings` for a model.

    Raises
    ------
    FileNotFoundError
        If the model has no settings file; the message says how to make one.
    ValueError
        If the file is not valid JSON or lacks a field.
    """
    path = settings_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no tuned inference settings for {Path(model_path).name}; "
            "run notebooks/03-results (or make report) to tune them on the validation split"
        )
    try:
        settings = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    missing = {"postprocess", "tta", "tile_size"} - set(settings)
    if missing or "method" not in settings.get("postprocess", {}):
        raise ValueError(f"{path}: missing fields {sorted(missing) or ['postprocess.method']}")
    return settings


def segment(model, image: np.ndarray, settings: dict) -> np.ndarray:
    """Instance labels of an image of any size: :func:`predict_full`, then post-processing.

    ``settings`` is what :func:`read_settings` gives (or :data:`FALLBACK_SETTINGS`):
    ``postprocess`` (``method`` and the settings of :func:`unet_tf.postprocess.to_instances`),
    ``tta``, ``tile_size`` and optionally ``rescale`` and ``nucleus_diameter`` (see
    :func:`predict`).
    """
    output, scale = predict(model, image, settings)
    return to_labels(output, settings, scale)


def scaled_postprocess(postprocess: dict, scale: float) -> dict:
    """The post-processing settings for an output predicted with the image resampled by
    ``scale`` (and resampled back to the image's size).

    ``min_area`` is tuned in the image's own pixels. An image shrunk by ``scale < 1`` was
    segmented at the network's scale, where ``min_area`` pixels cover ``min_area / scale**2``
    of the image's own: the fragments the network leaves of nuclei far larger than it was
    trained on are of that size, so the minimum grows with the shrinking. For enlarged
    images it stays at the tuned value: a smaller minimum lets specks of noise through
    (on the scale check it cost 0.010 at 1x and gained nothing at other scales).
    """
    if scale >= 1.0:
        return postprocess
    min_area = postprocess.get("min_area", MIN_AREA)
    return {**postprocess, "min_area": max(min_area, round(min_area / scale**2))}


def to_labels(output: np.ndarray, settings: dict, scale: float = 1.0) -> np.ndarray:
    """Instance labels of a network output with the post-processing of ``settings`` (its
    ``postprocess``), as :func:`postprocessed` makes them."""
    return postprocessed(output, settings["postprocess"], scale)


def postprocessed(output: np.ndarray, postprocess: dict, scale: float = 1.0) -> np.ndarray:
    """Instance labels of a network output with the post-processing ``postprocess`` (the
    settings of :func:`unet_tf.postprocess.to_instances`), for an output predicted with the
    image resampled by ``scale`` (see :func:`scaled_postprocess`)."""
    return to_instances(output, **scaled_postprocess(postprocess, scale))
