"""One look for every image: nuclei bright on a dark background, intensities normalised.

DSB2018 mixes fluorescence images (bright nuclei on black), brightfield and stained tissue
(dark nuclei on a bright background), at every brightness. A network fed raw RGB learns
each look separately and fails on looks it has seen rarely. :func:`nuclei_bright` maps every
image to one representation first:

1. gray: the mean of the colour channels (weights may be jittered in training, see
   ``channel_weights``, so that stains that colour nuclei differently look alike);
2. polarity: where the background is bright (the median, which lies in the background of
   all but the most crowded images, is nearer the image's maximum than its minimum), the
   gray image is inverted, so that nuclei are always brighter than their surroundings;
3. robust range: the ``low`` and ``high`` percentiles map to 0 and 1, so a dim and a bright
   image of the same nuclei look the same. In an image with very few nuclei the high
   percentile falls in the background, whose noise would be stretched over the whole
   range; the top of the range is therefore at least a quarter of the way from the low
   percentile to the maximum.

The result is one channel in [0, 1]. The same TensorFlow function serves training (on whole
images before cropping) and inference (on whole images before tiling), so the two cannot
drift apart; models trained on it take one input channel, which is how
:func:`unet_tf.inference.predict_full` knows to apply it.
"""

import numpy as np
import tensorflow as tf

REPRESENTATIONS = ("rgb", "nuclei_bright")
PERCENTILES = (1.0, 99.8)
# Percentiles are estimated on at most this many pixels (a regular subsample): exact enough
# for a robust range, and cheap for the 1.4-megapixel images of DSB2018 and larger ones.
_SAMPLE_PIXELS = 1 << 18


def input_channels(representation: str) -> int:
    """Model input channels of a representation: 3 for ``rgb``, 1 for ``nuclei_bright``.

    Raises
    ------
    ValueError
        If the representation is unknown.
    """
    if representation not in REPRESENTATIONS:
        raise ValueError(
            f"unknown representation {representation!r}; choose one of {REPRESENTATIONS}"
        )
    return 3 if representation == "rgb" else 1


def _percentiles(values: tf.Tensor, percents) -> tf.Tensor:
    """Percentiles along the last axis of ``(..., n)`` values (nearest rank)."""
    ordered = tf.sort(values, axis=-1)
    last = tf.cast(tf.shape(ordered)[-1] - 1, tf.float32)
    ranks = tf.cast(tf.round(last * tf.constant(percents, tf.float32) / 100.0), tf.int32)
    return tf.gather(ordered, ranks, axis=-1)


def _subsample(images: tf.Tensor) -> tf.Tensor:
    """Every ``s``-th row and column of a ``(batch, height, width, channels)`` batch, ``s``
    chosen so that at most ``_SAMPLE_PIXELS`` pixels of each image are kept."""
    shape = tf.shape(images)
    pixels = tf.cast(shape[1] * shape[2], tf.float32)
    stride = tf.cast(tf.math.ceil(tf.sqrt(pixels / _SAMPLE_PIXELS)), tf.int32)
    return images[:, ::stride, ::stride]


def _floored_high(low: tf.Tensor, high: tf.Tensor, top: tf.Tensor) -> tf.Tensor:
    """``high``, at least a quarter of the way from ``low`` to ``top`` (the maximum): in an
    image with very few nuclei the high percentile falls in the background, whose noise
    would otherwise be stretched over the whole range."""
    return tf.maximum(high, low + 0.25 * (top - low))


def _gray(image: tf.Tensor, channel_weights=None) -> tf.Tensor:
    if channel_weights is None:
        return tf.reduce_mean(image, axis=-1)
    weights = tf.convert_to_tensor(channel_weights, tf.float32)
    return tf.reduce_sum(image * weights, axis=-1) / tf.reduce_sum(weights)


def batch_statistics(
    images, channel_weights=None, percentiles: tuple[float, float] = PERCENTILES
) -> tf.Tensor:
    """:func:`statistics` of every image of a ``(batch, height, width, channels)`` batch.

    Returns ``(batch, 3)``. This is the one implementation: :func:`statistics` calls it on
    a batch of one, and the bioimage.io export (:mod:`unet_tf.modelzoo`) builds it into
    the exported graph, so that the normalisation cannot differ between the two.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    gray = tf.reshape(_gray(_subsample(images), channel_weights), [tf.shape(images)[0], -1])
    lower, upper = percentiles
    # One sort serves both polarities: percentile p of the inverted image is one minus
    # percentile 100 - p of the image.
    darkest, median, brightest, low, high, low_inverted, high_inverted = tf.unstack(
        _percentiles(gray, [0.0, 50.0, 100.0, lower, upper, 100.0 - lower, 100.0 - upper]),
        axis=-1,
    )
    bright_background = median - darkest > brightest - median
    low = tf.where(bright_background, 1.0 - low_inverted, low)
    high = tf.where(bright_background, 1.0 - high_inverted, high)
    top = tf.where(bright_background, 1.0 - darkest, brightest)
    high = _floored_high(low, high, top)
    return tf.stack([tf.cast(bright_background, tf.float32), low, high], axis=-1)


def statistics(
    image, channel_weights=None, percentiles: tuple[float, float] = PERCENTILES
) -> tf.Tensor:
    """What :func:`nuclei_bright` needs to know of a whole image: ``[invert, low, high]``.

    Computed on a regular subsample of at most ``2**18`` pixels (every ``s``-th row and
    column), so that it costs little for large images, and the same for an image in
    training as at inference. ``invert`` is 1.0 where the background is bright.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    return batch_statistics(image[None], channel_weights, percentiles)[0]


def normalize(image, stats: tf.Tensor, channel_weights=None) -> tf.Tensor:
    """Apply :func:`statistics` of a whole image to it, or to any crop of it.

    Also takes a batch of images with ``(batch, 3)`` statistics of :func:`batch_statistics`.
    """
    image = tf.convert_to_tensor(image, tf.float32)
    stats = tf.convert_to_tensor(stats, tf.float32)
    if image.shape.rank == 4:
        # One row of statistics per image, broadcast over its pixels.
        stats = stats[:, None, None, :]
    invert, low, high = tf.unstack(stats, axis=-1)
    gray = _gray(image, channel_weights)
    gray = invert * (1.0 - gray) + (1.0 - invert) * gray
    # A flat image has no range to stretch; it stays flat (and dark) rather than noise.
    scaled = tf.clip_by_value((gray - low) / tf.maximum(high - low, 1e-3), 0.0, 1.0)
    return scaled[..., None]


def nuclei_bright(
    image,
    channel_weights=None,
    percentiles: tuple[float, float] = PERCENTILES,
) -> tf.Tensor:
    """The one-channel, normalised, nuclei-bright version of an image.

    Parameters
    ----------
    image : array or tf.Tensor
        ``(height, width, channels)`` in [0, 1], any number of channels.
    channel_weights : array or tf.Tensor, optional
        Weights of the channels in the gray value; the plain mean by default.
    percentiles : tuple of float
        The gray values mapped to 0 and 1.

    Returns
    -------
    tf.Tensor
        ``(height, width, 1)`` float32 in [0, 1].

    Examples
    --------
    A bright spot on a dark image and a dark spot on a bright one give the same result:

    >>> dark = np.zeros((8, 8, 3), np.float32)
    >>> dark[2:4, 2:4] = 0.8
    >>> a = nuclei_bright(dark).numpy()[..., 0]
    >>> b = nuclei_bright(1.0 - dark).numpy()[..., 0]
    >>> bool(np.allclose(a, b)), float(a[2, 2]), float(a[0, 0])
    (True, 1.0, 0.0)
    """
    stats = statistics(image, channel_weights, percentiles)
    return normalize(image, stats, channel_weights)


def to_model_input(image: np.ndarray, channels: int, stats=None) -> np.ndarray:
    """An image as a model with ``channels`` inputs takes it.

    Models of the ``rgb`` representation (3 channels) take the image as read; models of
    ``nuclei_bright`` (1 channel) take :func:`nuclei_bright` of it, or, for a part of a
    larger image, :func:`normalize` with the whole image's ``stats`` (:func:`statistics`).

    Raises
    ------
    ValueError
        If the image is not ``(height, width, channels)`` or the channel count is not 1 or 3.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (height, width, channels), got shape {image.shape}")
    if channels == 1:
        if stats is not None:
            return normalize(image, stats).numpy()
        return nuclei_bright(image).numpy()
    if channels == 3:
        if image.shape[-1] == 1:
            return np.repeat(image, 3, axis=-1)
        return image[..., :3]
    raise ValueError(f"models take 1 (nuclei_bright) or 3 (rgb) channels, not {channels}")
