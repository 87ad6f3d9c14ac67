"""``tf.data`` input pipelines: random crops at native resolution with augmentation.

Decoded images and instance labels are held in memory once (:func:`pack_samples`), as one
flat tensor per kind with offsets, so every step of the pipeline is a TensorFlow op that
runs in parallel (``num_parallel_calls=tf.data.AUTOTUNE``) without the Python GIL.

A training element is made in this order:

1. pick an image (every image once per pass, in a seeded shuffled order);
2. take a ``crop_size`` square at native resolution; images smaller than the crop are
   padded with zeros (label 0), never upscaled. With ``affine`` or ``elastic`` the crop is
   resampled through a random rotation/scale/shear and/or a smooth random displacement
   field: bilinear for the image, nearest neighbour for the labels, so labels stay labels;
3. random flips and 90-degree rotations, applied to image and labels together;
4. brightness, contrast and gamma changes of the image only;
5. the training targets, computed from the augmented instance labels by a pluggable
   ``target_fn`` (``labels (H, W) int32 -> targets (H, W, K) float32``).

Every random choice is drawn from stateless generators seeded by ``(seed, element number)``,
so a pipeline gives the same batches for the same seed on every run.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from unet_tf import appearance
from unet_tf.inference import axis_tiles

AUTOTUNE = tf.data.AUTOTUNE
# Images are stored as uint16 in memory: exact for 8- and 16-bit sources, half of float32.
_IMAGE_SCALE = 65535.0


def binary_target(labels: tf.Tensor) -> tf.Tensor:
    """Training target: 1.0 on any nucleus, 0.0 on background, shape ``(H, W, 1)``."""
    return tf.cast(labels > 0, tf.float32)[..., None]


def border_target(labels: tf.Tensor, width: int = 2) -> tf.Tensor:
    """Training targets ``(H, W, 2)``: channel 0 any nucleus, channel 1 nucleus borders.

    A border pixel is a nucleus pixel with background or another nucleus within ``width``
    pixels (a square neighbourhood), so touching nuclei are separated by a band of border
    about ``2 * width`` pixels wide. Predicting it lets the watershed of
    :func:`unet_tf.postprocess.watershed_instances` place one marker per nucleus.
    """
    values = tf.cast(labels, tf.float32)[None, ..., None]
    size = 2 * width + 1
    largest = tf.nn.max_pool2d(values, size, 1, "SAME")
    smallest = -tf.nn.max_pool2d(-values, size, 1, "SAME")
    foreground = values > 0
    border = foreground & ((largest != values) | (smallest != values))
    return tf.concat([tf.cast(foreground, tf.float32), tf.cast(border, tf.float32)], -1)[0]


def _erode(region: tf.Tensor, cross: bool) -> tf.Tensor:
    """Binary erosion of a ``(1, H, W, 1)`` float mask by a 3x3 square or a 3x3 cross."""
    if not cross:
        return -tf.nn.max_pool2d(-region, 3, 1, "SAME")
    rows = -tf.nn.max_pool2d(-region, (1, 3), 1, "SAME")
    columns = -tf.nn.max_pool2d(-region, (3, 1), 1, "SAME")
    return tf.minimum(rows, columns)


def center_distance(labels: tf.Tensor) -> tf.Tensor:
    """Distance of every nucleus pixel to its nucleus's edge, divided by the nucleus's
    largest, shape ``(H, W)`` float32: 1 at the centre, small at the edge, 0 on background.

    Distances are counted by repeated erosion, alternating a 3x3 square and a 3x3 cross
    (an octagonal approximation of the Euclidean distance), which needs only pooling and so
    runs inside the ``tf.data`` pipeline for every augmented crop. The first erosion keeps
    the pixels whose whole 3x3 neighbourhood is the same nucleus, so touching nuclei get
    edges where they meet. Dividing by each nucleus's own largest distance makes the map the
    same for a nucleus at any size, so zoom augmentation and rescaling leave it unchanged,
    and between two touching nuclei it dips to their edge value, one over each nucleus's
    largest distance: the "centre" that StarDist's
    object probabilities and Cellpose's flows point to, here as a map the watershed of
    :func:`unet_tf.postprocess.center_watershed` can grow nuclei from.
    """
    labels = tf.cast(labels, tf.int32)
    # The nucleus pixels that are not border pixels at width 1 (see border_target).
    nucleus, edge = tf.unstack(border_target(labels, width=1)[None], axis=-1)
    region = (nucleus - edge)[..., None]
    distance = nucleus[..., None] + region

    def grow(step, region, distance):
        region = _erode(region, cross=step % 2 == 0)
        return step + 1, region, distance + region

    # Within a nucleus every erosion after the first is a plain binary one: a pixel kept
    # by the first has only pixels of its own nucleus around it.
    _, _, distance = tf.while_loop(
        lambda step, region, distance: tf.reduce_any(region > 0),
        grow,
        (tf.constant(0), region, distance),
    )
    distance = distance[0, ..., 0]
    segments = tf.reduce_max(labels) + 1
    peaks = tf.math.unsorted_segment_max(
        tf.reshape(distance, [-1]), tf.reshape(labels, [-1]), segments
    )
    peak = tf.gather(tf.maximum(peaks, 1.0), labels)
    return tf.where(labels > 0, distance / peak, 0.0)


def center_target(labels: tf.Tensor, width: int = 2) -> tf.Tensor:
    """Training targets ``(H, W, 3)``: nucleus, borders (as :func:`border_target`) and the
    normalised distance to the nucleus edge of :func:`center_distance`."""
    return tf.concat([border_target(labels, width), center_distance(labels)[..., None]], -1)


def contact_zone(labels: tf.Tensor, distance: int = 3) -> tf.Tensor:
    """Pixels with two different nuclei within ``distance`` pixels, shape ``(H, W)`` bool.

    These are the thin gaps between touching nuclei and the nucleus edges on either side of
    them: the pixels whose prediction decides whether two nuclei come out as one object or
    two. The neighbourhood is a ``2 * distance + 1`` square.
    """
    values = tf.cast(labels, tf.float32)[None, ..., None]
    size = 2 * distance + 1
    # Background (0) must not count as a second nucleus, so it becomes +inf for the minimum.
    nuclei = tf.where(values > 0, values, np.inf)
    largest = tf.nn.max_pool2d(values, size, 1, "SAME")
    smallest = -tf.nn.max_pool2d(-nuclei, size, 1, "SAME")
    return ((smallest < largest) & tf.math.is_finite(smallest))[0, ..., 0]


def with_contact_weights(
    target_fn: str | Callable, weight: float, distance: int = 3
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Append a pixel-weight channel to ``target_fn``'s targets: ``1 + weight`` in contact zones.

    This is the idea of the weight map of the original U-Net paper (Ronneberger et al., 2015):
    the loss stresses the few pixels that separate touching nuclei. It is a binary version of
    it, ``1 + weight`` within ``distance`` pixels of two nuclei and 1 elsewhere, which is
    cheap enough to compute for every augmented crop. The losses of :mod:`unet_tf.losses`
    built with ``pixel_weights=True`` read the last channel as these weights.

    Raises
    ------
    ValueError
        If ``weight`` is negative or ``distance`` is below 1.
    """
    if weight < 0 or distance < 1:
        raise ValueError(f"need weight >= 0 and distance >= 1, got {weight} and {distance}")
    base = get_target_fn(target_fn)

    def weighted_target(labels: tf.Tensor) -> tf.Tensor:
        zone = tf.cast(contact_zone(labels, distance), tf.float32)
        return tf.concat([base(labels), (1.0 + weight * zone)[..., None]], axis=-1)

    return weighted_target


@dataclass(frozen=True)
class Target:
    """A named training target: the function that computes it and the channels it gives.

    Attributes
    ----------
    fn : callable
        ``labels (H, W) int32 -> targets (H, W, channels) float32``, TensorFlow ops only.
    channels : int
        The ``K`` of the targets, which is also the ``num_classes`` of a model that
        predicts them.
    """

    fn: Callable[[tf.Tensor], tf.Tensor]
    channels: int


TARGETS: dict[str, Target] = {
    "binary": Target(binary_target, channels=1),
    "border": Target(border_target, channels=2),
    "center": Target(center_target, channels=3),
}


def _named_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}") from None


def get_target_fn(target: str | Callable) -> Callable[[tf.Tensor], tf.Tensor]:
    """Return a target function by name (see ``TARGETS``), or ``target`` if it is callable.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    if callable(target):
        return target
    return _named_target(target).fn


def target_channels(name: str) -> int:
    """Return the number of channels of the named target (see ``TARGETS``).

    This is the ``num_classes`` of a model trained on it. Pixel weights appended by
    :func:`with_contact_weights` are not counted: the loss reads and drops them.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    return _named_target(name).channels


@dataclass(frozen=True)
class Augmentation:
    """Augmentation settings of :func:`make_training_dataset`.

    Attributes
    ----------
    flips, rotations : bool
        Random horizontal/vertical flips and 90-degree rotations.
    brightness : float
        Maximum absolute brightness shift (0 disables).
    contrast : tuple of float
        Range of the contrast factor around the image mean ((1, 1) disables).
    gamma : tuple of float
        Range of the gamma exponent ((1, 1) disables).
    affine : bool
        Random rotation by any angle, scaling in ``scale`` and shear up to ``shear``.
    scale : tuple of float
        Range of the affine scale factor.
    shear : float
        Maximum affine shear.
    elastic : bool
        Smooth random deformation.
    elastic_alpha : float
        Standard deviation of the elastic displacement, in pixels.
    elastic_spacing : int
        Spacing in pixels of the coarse grid of random displacements that is smoothly
        interpolated into the displacement field.
    max_scale : float
        Random zoom of the crop, log-uniform in ``[1 / max_scale, max_scale]`` (1 disables):
        a region of ``crop_size / zoom`` pixels is resampled to the crop, bilinear for the
        image and nearest neighbour for the labels, so the network sees nuclei of many
        sizes. (With ``affine`` the affine ``scale`` applies instead.)
    blur : float
        Largest standard deviation, in pixels, of a Gaussian blur applied to half the crops
        (0 disables): out-of-focus and low-magnification images.
    noise : float
        Largest standard deviation of Gaussian noise added to half the crops (0 disables).
    channel_weights : bool
        With the ``nuclei_bright`` representation, draw the weights of the colour channels
        in the gray value at random per crop, so that stains that colour nuclei differently
        give different contrasts in training.
    tissue : float
        Largest brightness of a random textured background laid behind half the crops
        (0 disables): stained tissue and brightfield cytoplasm, as ``nuclei_bright`` shows
        them, are a fibrous mid-gray around the nuclei, while fluorescence images, most of
        the training set, are black there. See :func:`_add_tissue`.
    low_resolution : float
        Largest factor by which half the crops are shrunk (antialiased) and enlarged back
        (bilinear), log-uniform from 1 (1 disables): images taken at a lower magnification
        than the training ones, which the automatic rescaling enlarges to the training
        nucleus size at inference, look like this. Labels are unchanged.
    """

    flips: bool = True
    rotations: bool = True
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.25)
    gamma: tuple[float, float] = (0.8, 1.25)
    affine: bool = False
    scale: tuple[float, float] = (0.8, 1.25)
    shear: float = 0.1
    elastic: bool = False
    elastic_alpha: float = 4.0
    elastic_spacing: int = 32
    max_scale: float = 1.0
    blur: float = 0.0
    noise: float = 0.0
    channel_weights: bool = False
    tissue: float = 0.0
    low_resolution: float = 1.0

    def __post_init__(self):
        if self.brightness < 0 or self.shear < 0 or self.elastic_alpha < 0:
            raise ValueError("brightness, shear and elastic_alpha must be non-negative")
        if not 0.0 <= self.tissue <= 1.0:
            raise ValueError(f"tissue must be in [0, 1], got {self.tissue}")
        if self.low_resolution < 1:
            raise ValueError(f"low_resolution must be at least 1, got {self.low_resolution}")
        if self.max_scale < 1 or self.blur < 0 or self.noise < 0:
            raise ValueError(
                f"max_scale must be at least 1, blur and noise non-negative; got "
                f"{self.max_scale}, {self.blur} and {self.noise}"
            )
        for name in ("contrast", "gamma", "scale"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 < low <= high")
        if self.elastic_spacing < 2:
            raise ValueError("elastic_spacing must be at least 2 pixels")


NO_AUGMENTATION = Augmentation(
    flips=False, rotations=False, brightness=0.0, contrast=(1.0, 1.0), gamma=(1.0, 1.0)
)


@dataclass(frozen=True)
class PackedSamples:
    """Images and labels of many sizes held as flat tensors (see :func:`pack_samples`)."""

    images: tf.Tensor  # uint16, all images' pixels one after the other
    image_offsets: tf.Tensor  # int64 (n + 1,)
    labels: tf.Tensor  # int32, all label pixels one after the other
    label_offsets: tf.Tensor  # int64 (n + 1,)
    shapes: tf.Tensor  # int32 (n, 3): height, width, channels
    count: int
    channels: int

    def image(self, index: tf.Tensor) -> tf.Tensor:
        """The float32 image at ``index`` (a scalar tensor)."""
        flat = self.images[self.image_offsets[index] : self.image_offsets[index + 1]]
        return tf.reshape(tf.cast(flat, tf.float32) / _IMAGE_SCALE, self.shapes[index])

    def label(self, index: tf.Tensor) -> tf.Tensor:
        """The int32 instance labels at ``index``."""
        flat = self.labels[self.label_offsets[index] : self.label_offsets[index + 1]]
        return tf.reshape(flat, self.shapes[index][:2])


def pack_samples(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> PackedSamples:
    """Hold decoded images (float32 in [0, 1]) and instance labels in memory for the pipelines.

    Raises
    ------
    ValueError
        If the lists differ in length, are empty, or an image and its labels differ in size.
    """
    if len(images) != len(labels) or not images:
        raise ValueError(
            f"need equally many images and labels, got {len(images)} and {len(labels)}"
        )
    channels = {image.shape[-1] for image in images}
    if len(channels) != 1 or any(image.ndim != 3 for image in images):
        raise ValueError(f"images must be (H, W, C) with one channel count, got {channels}")
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        if image.shape[:2] != label.shape:
            raise ValueError(f"sample {index}: image {image.shape[:2]} and labels {label.shape}")

    def offsets(arrays):
        return tf.constant(np.concatenate([[0], np.cumsum([a.size for a in arrays])]), tf.int64)

    flat_images = np.concatenate(
        [
            np.round(np.clip(image, 0.0, 1.0) * _IMAGE_SCALE).astype(np.uint16).ravel()
            for image in images
        ]
    )
    return PackedSamples(
        images=tf.constant(flat_images),
        image_offsets=offsets(images),
        labels=tf.constant(np.concatenate([label.astype(np.int32).ravel() for label in labels])),
        label_offsets=offsets(labels),
        shapes=tf.constant([image.shape for image in images], tf.int32),
        count=len(images),
        channels=channels.pop(),
    )


def _uniform(seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform([], seed, minval=low, maxval=high)


def _crop_or_pad(stack: tf.Tensor, crop_size, seed: tf.Tensor) -> tf.Tensor:
    """A random ``crop_size`` square of ``stack``; sides shorter than that are zero-padded.

    ``crop_size`` may be a scalar tensor (the zoomed crops of :func:`_zoomed_crop`).
    """
    shape = tf.shape(stack)
    height, width = shape[0], shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 4)

    def start(size, seed_pair):
        # Where the image is larger, pick a crop offset; where smaller, a padding offset.
        span = tf.abs(size - crop_size) + 1
        return tf.random.stateless_uniform([], seed_pair, 0, span, dtype=tf.int32)

    top, left = start(height, seeds[0]), start(width, seeds[1])
    crop_top = tf.where(height > crop_size, top, 0)
    crop_left = tf.where(width > crop_size, left, 0)
    cropped = stack[
        crop_top : crop_top + tf.minimum(height, crop_size),
        crop_left : crop_left + tf.minimum(width, crop_size),
    ]
    pad_top = tf.where(height < crop_size, top, 0)
    pad_left = tf.where(width < crop_size, left, 0)
    cropped_shape = tf.shape(cropped)
    padding = [
        [pad_top, crop_size - cropped_shape[0] - pad_top],
        [pad_left, crop_size - cropped_shape[1] - pad_left],
        [0, 0],
    ]
    padded = tf.pad(cropped, padding)
    if isinstance(crop_size, int):
        padded = tf.ensure_shape(padded, [crop_size, crop_size, None])
    return padded


def _zoomed_crop(
    stack: tf.Tensor, crop_size: int, max_scale: float, seed, base_zoom=1.0
) -> tf.Tensor:
    """A random crop seen at a random zoom in ``[1 / max_scale, max_scale]`` times
    ``base_zoom``.

    A square of ``crop_size / zoom`` pixels is cut (or padded) and resampled to
    ``crop_size``: bilinear with antialiasing for the image channels, nearest neighbour for
    the last channel, the labels, so that they stay labels.
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    zoom = base_zoom * tf.exp(_uniform(seeds[0], -np.log(max_scale), np.log(max_scale)))
    region = tf.maximum(1, tf.cast(tf.round(crop_size / zoom), tf.int32))
    cut = _crop_or_pad(stack, region, seeds[1])
    size = [crop_size, crop_size]
    image = tf.image.resize(cut[..., :-1], size, method="bilinear", antialias=True)
    labels = tf.image.resize(cut[..., -1:], size, method="nearest")
    return tf.ensure_shape(tf.concat([image, labels], -1), [crop_size, crop_size, None])


def _gather(image: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """Pixels of ``image`` at integer coordinates; coordinates outside give zeros."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    indices = tf.stack(
        [tf.clip_by_value(rows, 0, height - 1), tf.clip_by_value(cols, 0, width - 1)], -1
    )
    values = tf.gather_nd(image, indices)
    return values * tf.cast(inside, image.dtype)[..., None]


def _warp_crop(image, labels, crop_size: int, augmentation: Augmentation, seed, base_zoom=1.0):
    """Resample a crop through a random affine map and/or elastic field around a random
    centre, the image zoomed by ``base_zoom`` first."""
    seeds = tf.random.experimental.stateless_split(seed, 8)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    half = crop_size / 2.0
    # Centres keep the crop inside the image where the image is large enough.
    centre_y = _uniform(
        seeds[0], tf.minimum(half, height / 2), tf.maximum(height - half, height / 2)
    )
    centre_x = _uniform(seeds[1], tf.minimum(half, width / 2), tf.maximum(width - half, width / 2))
    grid = tf.range(crop_size, dtype=tf.float32) - half + 0.5
    out_y, out_x = tf.meshgrid(grid, grid, indexing="ij")
    src_y, src_x = out_y, out_x
    if augmentation.affine:
        angle = _uniform(seeds[2], -np.pi, np.pi)
        log_low, log_high = np.log(augmentation.scale[0]), np.log(augmentation.scale[1])
        zoom = tf.exp(_uniform(seeds[3], log_low, log_high))
        shear = _uniform(seeds[4], -augmentation.shear, augmentation.shear)
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        # Output pixel -> source pixel: inverse zoom, rotation, then shear along x.
        src_y = cos * out_y - sin * out_x
        src_x = sin * out_y + cos * out_x + shear * src_y
    if augmentation.elastic:
        coarse = crop_size // augmentation.elastic_spacing + 2
        displacement = tf.random.stateless_normal([1, coarse, coarse, 2], seeds[5])
        displacement = (
            augmentation.elastic_alpha
            * tf.image.resize(displacement, [crop_size, crop_size], method="bicubic")[0]
        )
        src_y, src_x = src_y + displacement[..., 0], src_x + displacement[..., 1]
    src_y, src_x = src_y / base_zoom + centre_y - 0.5, src_x / base_zoom + centre_x - 0.5

    nearest = _gather(
        tf.cast(labels[..., None], tf.float32),
        tf.cast(tf.round(src_y), tf.int32),
        tf.cast(tf.round(src_x), tf.int32),
    )
    top, left = tf.floor(src_y), tf.floor(src_x)
    weight_y, weight_x = (src_y - top)[..., None], (src_x - left)[..., None]
    top, left = tf.cast(top, tf.int32), tf.cast(left, tf.int32)
    warped = (
        _gather(image, top, left) * (1 - weight_y) * (1 - weight_x)
        + _gather(image, top, left + 1) * (1 - weight_y) * weight_x
        + _gather(image, top + 1, left) * weight_y * (1 - weight_x)
        + _gather(image, top + 1, left + 1) * weight_y * weight_x
    )
    return tf.concat([warped, nearest], axis=-1)


def _augment_intensity(image: tf.Tensor, augmentation: Augmentation, seed) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 3)
    low, high = augmentation.gamma
    if low != high:
        gamma = tf.exp(_uniform(seeds[0], np.log(low), np.log(high)))
        image = tf.pow(tf.maximum(image, 0.0), gamma)
    low, high = augmentation.contrast
    if low != high:
        mean = tf.reduce_mean(image)
        image = (image - mean) * _uniform(seeds[1], low, high) + mean
    if augmentation.brightness > 0:
        image = image + _uniform(seeds[2], -augmentation.brightness, augmentation.brightness)
    # A split into five seeds begins with the four of a split into four, so the blur and
    # noise draw what they drew before the tissue (the fifth) was added.
    more = tf.random.experimental.stateless_split(seeds[2], 5)
    if augmentation.tissue > 0:
        image = _to_half(
            image,
            more[4],
            lambda: _add_tissue(image, augmentation.tissue, tf.reverse(more[4], [0])),
        )
    if augmentation.blur > 0:
        sigma = _uniform(more[0], 0.0, augmentation.blur)
        image = _to_half(image, more[1], lambda: _gaussian_blur(image, sigma))
    if augmentation.noise > 0:
        scale = _uniform(more[2], 0.0, augmentation.noise)
        noise = scale * tf.random.stateless_normal(tf.shape(image), more[3])
        image = image + tf.where(_uniform(tf.reverse(more[3], [0])) < 0.5, noise, 0.0)
    return tf.clip_by_value(image, 0.0, 1.0)


def _to_half(image: tf.Tensor, seed, changed: Callable[[], tf.Tensor]) -> tf.Tensor:
    """``changed()`` for half the crops (by a draw from ``seed``), ``image`` for the others.

    tf.cond computes the change only for the crops that get it (tf.where would compute it
    for every crop and throw half away).
    """
    return tf.cond(_uniform(seed) < 0.5, changed, lambda: image)


def _texture(shape: tf.Tensor, sigma: tf.Tensor, seed) -> tf.Tensor:
    """``(height, width, 1)`` Gaussian noise blurred by ``sigma`` pixels, stretched to
    [0, 1]: fibres and granules, for the tissue augmentation (:func:`_add_tissue`)."""
    noise = tf.random.stateless_normal(tf.concat([shape[:2], [1]], 0), seed)
    texture = _gaussian_blur(noise, sigma)
    low, high = tf.reduce_min(texture), tf.reduce_max(texture)
    return (texture - low) / tf.maximum(high - low, 1e-6)


def _add_tissue(image: tf.Tensor, strength: float, seed) -> tf.Tensor:
    """Lay a random textured background of brightness up to ``strength`` behind a crop.

    The texture is Gaussian noise blurred by 0.5 to 2 pixels (fine fibres and granules),
    stretched to [0, 1] and raised to a random power of 1 to 3 (from an even granular
    gray to sparse bright specks), and seen through a smooth random mask of patches a
    quarter of the crop across (tissue here, empty space there). The crop becomes the
    brighter of itself and the texture times a random brightness in ``[strength / 4,
    strength]``: nuclei, brighter than the tissue around them in ``nuclei_bright``, stay as
    they are, and the labels need not change.
    """
    seeds = tf.random.experimental.stateless_split(seed, 4)
    shape = tf.shape(image)
    texture = _texture(shape, _uniform(seeds[1], 0.5, 2.0), seeds[0])
    texture = tf.pow(texture, _uniform(tf.reverse(seeds[1], [0]), 1.0, 3.0))
    coarse = tf.random.stateless_uniform([1, 5, 5, 1], seeds[2])
    patches = tf.image.resize(coarse, shape[:2], method="bicubic")[0]
    # Half the area on average is tissue, with soft edges.
    patches = tf.clip_by_value((patches - 0.5) * 4.0 + 0.5, 0.0, 1.0)
    brightness = _uniform(seeds[3], strength / 4.0, strength)
    return tf.maximum(image, brightness * texture * patches)


def _lower_resolution(image: tf.Tensor, largest: float, seed) -> tf.Tensor:
    """Shrink a square crop by a factor log-uniform in ``[1, largest]`` and enlarge it back."""
    size = tf.shape(image)[0]
    factor = tf.exp(_uniform(seed, 0.0, np.log(largest)))
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) / factor), tf.int32), 1)
    shrunk = tf.image.resize(image, tf.stack([small, small]), "bilinear", antialias=True)
    return tf.ensure_shape(tf.image.resize(shrunk, tf.stack([size, size]), "bilinear"), image.shape)


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int = 4) -> tf.Tensor:
    """Blur every channel of ``(H, W, C)`` with a Gaussian of ``sigma`` pixels (at most
    ``radius / 2`` for a faithful kernel), as two separable convolutions."""
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / tf.maximum(sigma, 1e-3)))
    kernel = kernel / tf.reduce_sum(kernel)
    # Channels become the batch, so that one single-channel filter serves any channel count.
    batch = tf.transpose(image, [2, 0, 1])[..., None]
    batch = tf.pad(batch, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
    batch = tf.nn.conv2d(batch, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
    batch = tf.nn.conv2d(batch, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")
    return tf.transpose(batch[..., 0], [1, 2, 0])


def represent(
    image: tf.Tensor,
    representation: str,
    augmentation: Augmentation | None = None,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """A whole image in a model's input representation (see :mod:`unet_tf.appearance`).

    With ``augmentation.channel_weights`` the colour channels are weighted at random (seeded
    by ``seed``) in the gray value of ``nuclei_bright``.
    """
    if representation == "rgb":
        return image
    weights = None
    if augmentation is not None and augmentation.channel_weights:
        weights = tf.random.stateless_uniform(tf.shape(image)[-1:], seed, 0.1, 1.0)
    return appearance.nuclei_bright(image, weights)


def balanced_weights(
    kinds: Sequence[str], balance: float, groups: Sequence[str] | None = None
) -> np.ndarray:
    """Sampling weights that draw rare kinds of images more often.

    Each image of a kind with ``n`` images gets weight ``n ** -balance``: 0 draws every
    image equally often (kinds in proportion to their size), 1 draws every kind equally
    often, and values between lean towards the rare kinds without drawing their few images
    over and over.

    With ``groups`` (one per image, such as its imaging type) the same rule works on two
    levels: a group of ``n`` images is drawn in proportion to ``n ** (1 - balance)``, and
    within it each kind in proportion to its own count to that power. One large group made
    of many small kinds (fluorescence, say, from many microscopes) then no longer
    outweighs a small group made of one kind (the stained images). Every kind must lie in
    one group.

    Examples
    --------
    >>> balanced_weights(["a", "a", "a", "b"], 1.0).round(3).tolist()
    [0.333, 0.333, 0.333, 1.0]
    >>> balanced_weights(["a", "b", "c", "c"], 1.0, groups=["x", "x", "y", "y"]).tolist()
    [0.5, 0.5, 0.5, 0.5]
    """
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}")
    counts = Counter(kinds)
    weights = np.array([counts[kind] ** -balance for kind in kinds], np.float64)
    if groups is None:
        return weights
    if len(groups) != len(kinds):
        raise ValueError(f"groups has {len(groups)} entries for {len(kinds)} kinds")
    pairs = Counter(zip(groups, kinds, strict=True))
    groups_per_kind = Counter(kind for _, kind in pairs)
    split = sorted(kind for kind, number in groups_per_kind.items() if number > 1)
    if split:
        raise ValueError(f"kinds {split} lie in more than one group")
    group_sizes = Counter(groups)
    # The summed weight of a group's images: each of its kinds contributes n ** (1 - b).
    group_mass = Counter()
    for (group, _kind), count in pairs.items():
        group_mass[group] += count ** (1.0 - balance)
    scale = [group_sizes[group] ** (1.0 - balance) / group_mass[group] for group in groups]
    return weights * np.array(scale, np.float64)


def augment_sample(
    image: tf.Tensor,
    labels: tf.Tensor,
    crop_size: int,
    augmentation: Augmentation,
    seed: tf.Tensor,
    base_zoom: tf.Tensor | float | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Crop and augment one sample; returns a ``(crop, crop, C)`` image and ``(crop, crop)`` labels.

    ``seed`` is a shape-(2,) integer tensor; the same seed gives the same result.
    ``base_zoom`` resamples the sample before any random zoom (size normalisation; None
    leaves it at its own size).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    channels = tf.shape(image)[-1]
    zoom = 1.0 if base_zoom is None else base_zoom
    if augmentation.affine or augmentation.elastic:
        stack = _warp_crop(image, labels, crop_size, augmentation, seeds[0], zoom)
    else:
        # Label values below 2**24 are exact in float32, so both travel in one tensor.
        stack = tf.concat([image, tf.cast(labels[..., None], tf.float32)], axis=-1)
        if augmentation.max_scale > 1 or base_zoom is not None:
            stack = _zoomed_crop(stack, crop_size, augmentation.max_scale, seeds[0], zoom)
        else:
            stack = _crop_or_pad(stack, crop_size, seeds[0])
    if augmentation.flips:
        stack = tf.image.stateless_random_flip_left_right(stack, seeds[1])
        stack = tf.image.stateless_random_flip_up_down(stack, tf.reverse(seeds[1], [0]))
    if augmentation.rotations:
        turns = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
        stack = tf.image.rot90(stack, turns)
    stack = tf.ensure_shape(stack, [crop_size, crop_size, None])
    image = stack[..., :channels]
    if augmentation.low_resolution > 1:
        # Drawn from a seed split off the flips' seed, so every other draw stays as it was.
        more = tf.random.experimental.stateless_split(seeds[1], 2)
        image = _to_half(
            image, more[0], lambda: _lower_resolution(image, augmentation.low_resolution, more[1])
        )
    image = _augment_intensity(image, augmentation, seeds[3])
    labels = tf.cast(tf.round(stack[..., -1]), tf.int32)
    return image, labels


def make_training_dataset(
    samples: PackedSamples,
    crop_size: int = 256,
    batch_size: int = 8,
    target_fn: str | Callable = "binary",
    augmentation: Augmentation = Augmentation(),
    seed: int = 0,
    crops_per_image: int = 1,
    skip_batches: int = 0,
    representation: str = "rgb",
    sample_weights: Sequence[float] | None = None,
    zooms: Sequence[float] | None = None,
) -> tf.data.Dataset:
    """An endless dataset of augmented random crops: ``(images, targets)`` batches.

    Parameters
    ----------
    samples : PackedSamples
        The training images and labels, from :func:`pack_samples`.
    crop_size : int
        Side of the square crops, at the images' native resolution.
    batch_size : int
        Crops per batch.
    target_fn : str or callable
        Maps ``(H, W)`` int32 instance labels to ``(H, W, K)`` float32 targets; a name from
        ``TARGETS`` or a function of TensorFlow ops.
    augmentation : Augmentation
        What to randomise; :data:`NO_AUGMENTATION` gives plain random crops.
    seed : int
        Seed of the shuffle and of every augmentation.
    crops_per_image : int
        Crops taken from each image per pass over the images.
    skip_batches : int
        Start after this many batches, as if they had been drawn: a resumed training run
        continues the exact sequence of the run it resumes.
    representation : str
        ``"rgb"`` (the images as read) or ``"nuclei_bright"`` (one normalised channel, see
        :mod:`unet_tf.appearance`, computed on the whole image before it is cropped).
    sample_weights : sequence of float, optional
        How often each image is drawn, relative to the others (see
        :func:`balanced_weights`). By default every image once per pass, in a shuffled order.
    zooms : sequence of float, optional
        The factor each image is resampled by before its crop is cut and randomly zoomed:
        size normalisation (see ``inference.size_factors``). Crops are cut from the image
        as it is and only the crop is resampled, so that enlarging an image costs nothing
        per crop. By default every image at its own size.

    Returns
    -------
    tf.data.Dataset
        Yields ``(batch, crop, crop, C)`` float32 images and ``(batch, crop, crop, K)``
        float32 targets, forever.
    """
    if crop_size < 1 or batch_size < 1 or crops_per_image < 1 or skip_batches < 0:
        raise ValueError(
            "crop_size, batch_size and crops_per_image must be at least 1, skip_batches at least 0"
        )
    appearance.input_channels(representation)
    target_fn = get_target_fn(target_fn)
    base_seed = tf.constant(seed, tf.int64)
    per_pass = samples.count * crops_per_image
    log_weights = None
    if sample_weights is not None:
        weights = np.asarray(sample_weights, np.float64)
        if weights.shape != (samples.count,) or not (weights > 0).all():
            raise ValueError(f"need one positive weight per image ({samples.count})")
        log_weights = tf.constant(np.log(weights / weights.sum())[None], tf.float32)
    zoom_table = None
    if zooms is not None:
        zoom_values = np.asarray(zooms, np.float32)
        if zoom_values.shape != (samples.count,) or not (zoom_values > 0).all():
            raise ValueError(f"need one positive zoom per image ({samples.count})")
        zoom_table = tf.constant(zoom_values)

    def make_element(counter):
        if log_weights is None:
            # Each pass visits every image crops_per_image times, in an order drawn from a
            # stateless bijection, so the order depends on the seed and nothing else.
            position, epoch = counter % per_pass, counter // per_pass
            shuffled = tf.random.experimental.index_shuffle(
                position, tf.stack([base_seed, epoch]), per_pass - 1
            )
            index = shuffled // crops_per_image
        else:
            draw = tf.random.stateless_categorical(
                log_weights, 1, tf.stack([base_seed + 1, counter])
            )
            index = draw[0, 0]
        image = represent(
            samples.image(index), representation, augmentation, tf.stack([base_seed + 2, counter])
        )
        image, labels = augment_sample(
            image,
            samples.label(index),
            crop_size,
            augmentation,
            tf.stack([base_seed, counter]),
            None if zoom_table is None else tf.gather(zoom_table, index),
        )
        return image, target_fn(labels)

    dataset = tf.data.Dataset.range(skip_batches * batch_size, np.iinfo(np.int64).max)
    dataset = dataset.map(make_element, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def make_validation_dataset(
    samples: PackedSamples,
    crop_size: int = 256,
    batch_size: int = 8,
    target_fn: str | Callable = "binary",
    representation: str = "rgb",
) -> tf.data.Dataset:
    """Deterministic crops that together cover every validation pixel, for ``model.fit``.

    Each image is cut into the fewest ``crop_size`` tiles that cover it, spread evenly with
    the first and last at the image edges (so neighbours may overlap), as
    :func:`unet_tf.inference.axis_tiles` places them; images smaller than a tile are
    zero-padded. Full-resolution evaluation of whole images is done with
    :func:`unet_tf.inference.predict_full` instead.

    Raises
    ------
    ValueError
        If ``crop_size`` or ``batch_size`` is below 1.
    """
    if crop_size < 1 or batch_size < 1:
        raise ValueError(
            f"crop_size and batch_size must be at least 1, got {crop_size}, {batch_size}"
        )
    target_fn = get_target_fn(target_fn)

    def starts(size: int) -> list[int]:
        # With no overlap asked and sides rounded up to a multiple of the crop, every tile
        # is exactly one crop: as many as cover the side, the same count as back-to-back
        # tiles with the last one moved to the edge, but with the overlap shared out evenly.
        _, offsets = axis_tiles(int(size), crop_size, overlap=0, multiple=crop_size)
        return offsets

    tiles = [
        (index, top, left)
        for index, (height, width, _) in enumerate(samples.shapes.numpy())
        for top in starts(height)
        for left in starts(width)
    ]
    tiles = tf.constant(tiles, tf.int32)

    def make_element(tile):
        index, top, left = tile[0], tile[1], tile[2]
        image = represent(samples.image(index), representation)
        labels = samples.label(index)
        image = image[top : top + crop_size, left : left + crop_size]
        labels = labels[top : top + crop_size, left : left + crop_size]
        padding = [[0, crop_size - tf.shape(labels)[0]], [0, crop_size - tf.shape(labels)[1]]]
        image = tf.pad(image, [*padding, [0, 0]])
        labels = tf.pad(labels, padding)
        channels = appearance.input_channels(representation)
        image = tf.ensure_shape(image, [crop_size, crop_size, channels])
        return image, target_fn(tf.ensure_shape(labels, [crop_size, crop_size]))

    dataset = tf.data.Dataset.from_tensor_slices(tiles)
    dataset = dataset.map(make_element, num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
