"""A file's raw pixels, of any type, to the network's input and the intensity measured.

``predict``, the blocks of a large image (:mod:`unet_tf.large`) and the viewer read
images of every kind (8-bit, 16-bit, float, with alpha, CT through a window); these
functions turn them into the network's float input in [0, 1] and the intensity the
nuclei are measured on, the same way everywhere.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_tf import decoding


def to_model_input(
    pixels: np.ndarray,
    path: Path,
    window: Sequence[float] | None = None,
    conversion: dict | None = None,
) -> np.ndarray:
    """Float32 ``(H, W, 3)`` model input in [0, 1] from raw pixels of any type.

    8-bit images are scaled as in training (divided by 255). Images of other types (16-bit
    microscopy, float) rarely use their full range, so they are scaled to put their 99.9th
    percentile at 1: a 12-bit image in a 16-bit file then looks to the model as it would
    have as an 8-bit export. A model trained through an intensity window (CT) gets its
    images through the same window. ``conversion`` (see :func:`input_conversion`) holds
    these numbers for a whole image when ``pixels`` is one block of it.
    """
    if window:
        from unet_tf import datasets

        return datasets.apply_window(pixels, window, path)
    if conversion is None:
        values = decoding.value_range(pixels, path)
        image = decoding.pixels_to_image(pixels, path, channels=3, values=values)
        top = _white_point(image, pixels.dtype)
    else:
        image = decoding.pixels_to_image(pixels, path, channels=3, values=conversion["values"])
        top = conversion["top"]
    return np.clip(image / top, 0.0, 1.0) if top is not None else image


def _white_point(image: np.ndarray, dtype: np.dtype) -> float | None:
    """The value put at 1 in an image that is not 8-bit (its 99.9th percentile); None for
    8-bit images, and for images without any bright pixel."""
    if dtype == np.uint8:
        return None
    top = float(np.percentile(image, 99.9))
    return top if top > 0 else None


def input_conversion(pixels: np.ndarray, path: Path, sample_pixels: int) -> dict:
    """How :func:`to_model_input` scales an image, for converting it block by block: its
    value range, and the value put at 1 (estimated on a regular subsample of at most
    ``sample_pixels`` pixels).
    """
    values = decoding.value_range(pixels, path)
    stride = decoding.sample_stride(pixels.shape, sample_pixels)
    sample = decoding.pixels_to_image(pixels[::stride, ::stride], path, channels=3, values=values)
    return {"values": values, "top": _white_point(sample, pixels.dtype)}


def intensity_channel(pixels: np.ndarray) -> np.ndarray:
    """The raw intensity for measurements: the mean over colour channels, alpha dropped."""
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] in (2, 4):
        pixels = pixels[..., :-1]
    return pixels.mean(axis=-1)
