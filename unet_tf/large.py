"""Very large images (whole slides, stitched mosaics) segmented block by block.

An image of more than ``LARGE_PIXELS`` pixels is cut into square blocks of ``block_size``
pixels (its *cores*), each extended by an ``overlap`` on every side. Each extended block is
predicted (in tiles, as any image) and post-processed on its own, and keeps the nuclei whose
bounding box starts inside its core. The overlap is larger than any nucleus, so a nucleus
that starts in a core lies whole inside that core's extended block: every nucleus, on a
seam or not, is kept exactly once, whole, from the block that owns it. Where two blocks
found the same nucleus with slightly different outlines, the one written second is dropped
if most of it is taken already.

Memory is bounded by the block, not the image, except for three things of the image's size:
the pixels as read, the label image (4 bytes a pixel) and the label file being written.
The normalisation of the input (:mod:`unet_tf.appearance`) and the intensity scaling of
16-bit and float files use numbers of the whole image (estimated on a regular subsample),
so all blocks are scaled alike; the automatic rescaling measures nuclei on a mosaic of
crops from across the image. Nuclei are measured block by block, on the blocks' raw pixels.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

# Images with more pixels than this are segmented in blocks (4096 x 4096).
LARGE_PIXELS = 1 << 24
BLOCK_SIZE = 2048
# Pixels of the regular subsample on which whole-image numbers are estimated.
SAMPLE_PIXELS = 1 << 20
# Largest side of the outline overlay written for a large image (it is downsampled).
OVERLAY_SIDE = 4096
# Crops of the mosaic on which nucleus sizes are measured for the automatic rescaling.
SIZE_CROPS, SIZE_CROP = 4, 1024


def is_large(shape: tuple[int, ...], block_size: int | None = None) -> bool:
    """Whether an image of ``shape`` is segmented in blocks.

    By default images of more than ``LARGE_PIXELS`` pixels are; a ``block_size`` given by
    the user makes any image with a side longer than it go in blocks, and 0 turns blocks off.
    """
    if block_size == 0:
        return False
    if block_size:
        return max(shape[:2]) > block_size
    return shape[0] * shape[1] > LARGE_PIXELS


def spans(size: int, block: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Cores and extended spans along one axis: ``(core_start, core_stop, start, stop)``.

    Cores of ``block`` pixels tile ``[0, size)``; each is extended by ``overlap`` on both
    sides, clipped to the image.
    """
    if block < 1 or overlap < 0:
        raise ValueError(f"block must be positive and overlap not negative: {block}, {overlap}")
    return [
        (
            start,
            min(start + block, size),
            max(0, start - overlap),
            min(size, start + block + overlap),
        )
        for start in range(0, size, block)
    ]


def normalisation_stats(net, pixels: np.ndarray, convert) -> np.ndarray | None:
    """The whole image's ``nuclei_bright`` statistics, for a one-channel model; else None.

    :func:`unet_tf.appearance.statistics` looks at every ``s``-th row and column of an image
    with ``s`` chosen so that at most ``2**18`` pixels are seen; converting only those pixels
    and computing the statistics on them gives exactly the whole image's numbers.
    """
    from unet_tf import appearance, decoding
    from unet_tf.model import model_channels

    if model_channels(net) != 1:
        return None
    stride = decoding.sample_stride(pixels.shape, appearance._SAMPLE_PIXELS)
    return appearance.statistics(convert(pixels[::stride, ::stride])).numpy()


def size_mosaic(pixels: np.ndarray, convert, crop: int = SIZE_CROP) -> np.ndarray:
    """Up to ``SIZE_CROPS`` crops from across the image side by side: where nucleus sizes
    are measured for the automatic rescaling."""
    height, width = pixels.shape[:2]
    crop_height, crop_width = min(crop, height), min(crop, width)
    # Crops centred in the four quarters of the image.
    centres = [(height * fy // 4, width * fx // 4) for fy in (1, 3) for fx in (1, 3)]
    crops = []
    for y, x in centres[:SIZE_CROPS]:
        top = int(np.clip(y - crop_height // 2, 0, height - crop_height))
        left = int(np.clip(x - crop_width // 2, 0, width - crop_width))
        crops.append(convert(pixels[top : top + crop_height, left : left + crop_width]))
    rows = [np.concatenate(crops[i : i + 2], axis=1) for i in range(0, len(crops), 2)]
    return np.concatenate(rows, axis=0)


@dataclass
class LargeResult:
    """Labels and measurements of a large image segmented in blocks."""

    labels: np.ndarray
    table: pd.DataFrame
    # The outline overlay, downsampled to at most OVERLAY_SIDE pixels a side.
    overlay: np.ndarray
    scale: float
    blocks: int
    # Nuclei that reached the edge of their extended block: larger than the overlap, so
    # they may be cut (none expected when the overlap suits the nucleus size).
    cut: int
    # Nuclei found twice on a seam and kept once.
    duplicates: int


def segment_large(
    net,
    pixels: np.ndarray,
    path: Path,
    settings: dict,
    name: str,
    plane: int = 0,
    pixel_size: float | None = None,
    block_size: int = BLOCK_SIZE,
    overlap: int | None = None,
    progress: bool = True,
    parts=None,
) -> LargeResult:
    """Segment and measure a large image in blocks (see the module's description).

    Parameters
    ----------
    net : keras.Model
        The model.
    pixels : numpy.ndarray
        The image's raw pixels, ``(height, width)`` or ``(height, width, channels)``, in
        the file's own type (8-bit images stay 8-bit: a quarter of float32's memory).
    path : pathlib.Path
        The file, for messages.
    settings : dict
        Inference settings (:func:`unet_tf.trained.load_model_and_settings`).
    name : str
        The image's name in the nucleus table.
    plane, pixel_size :
        As in :func:`unet_tf.measure.measure`.
    block_size : int
        Side of the blocks' cores (divided by the rescaling factor where images are
        enlarged, at least 256).
    overlap : int, optional
        Extension of each block on every side; by default four training nucleus diameters
        at the image's scale, at least 128 pixels.
    progress : bool
        Show a progress bar over the blocks.
    parts : unet_tf.journal.Parts, optional
        Where each finished block is kept (and the rescaling factor); blocks found there
        are taken as they are, so that a stopped run continues where it was.

    Returns
    -------
    LargeResult
    """
    from tqdm.auto import tqdm

    from unet_tf import inference, journal, measure, model_input, plots

    window = settings.get("window")
    conversion = None if window else model_input.input_conversion(pixels, path, SAMPLE_PIXELS)

    def convert(block):
        return model_input.to_model_input(block, path, window, conversion)

    stats = normalisation_stats(net, pixels, convert)
    scale = _scale(net, pixels, convert, settings, parts)
    diameter = settings.get("nucleus_diameter") or 16.0
    if overlap is None:
        overlap = max(128, int(np.ceil(4 * diameter / scale)))
    # Blocks are enlarged by the rescaling before they are predicted; smaller blocks keep
    # the memory of an upscaled block at that of a plain one.
    if scale > 1.0:
        block_size = min(block_size, max(256, int(block_size / scale)))
    height, width = pixels.shape[:2]
    labels = np.zeros((height, width), np.uint32)
    blocks = [
        (rows, cols)
        for rows in spans(height, block_size, overlap)
        for cols in spans(width, block_size, overlap)
    ]
    tables, next_label, cut, duplicates = [], 1, 0, 0
    for index, (rows, cols) in enumerate(
        tqdm(blocks, desc=f"blocks of {name}", unit="block", disable=not progress, file=sys.stderr)
    ):
        (_, _, top, bottom), (_, _, left, right) = rows, cols
        target = labels[top:bottom, left:right]
        piece = f"block-{index:05d}"
        kept = parts.load(piece) if parts else None
        if kept is None:
            block = pixels[top:bottom, left:right]
            output, _ = inference.predict(net, convert(block), settings, scale=scale, stats=stats)
            local = inference.to_labels(output, settings, scale)
            del output
            owned, block_cut = _owned_nuclei(local, rows, cols, (height, width))
            written, block_duplicates = _place(owned, target, next_label)
            table = measure.measure(
                np.where(written > 0, written - np.uint32(next_label - 1), 0),
                model_input.intensity_channel(block),
                name,
                pixel_size,
                plane,
            )
            table["label"] += next_label - 1
            table["centroid_y"] += top
            table["centroid_x"] += left
            if parts:
                parts.save(
                    piece,
                    written=written,
                    counts=np.array([block_cut, block_duplicates]),
                    **journal.table_arrays(table, "nuclei"),
                )
        else:
            written, (block_cut, block_duplicates) = kept["written"], kept["counts"]
            table = journal.arrays_table(kept, "nuclei")
        target[written > 0] = written[written > 0]
        cut += int(block_cut)
        duplicates += int(block_duplicates)
        if len(table):
            tables.append(table)
            next_label = int(written.max()) + 1
    table = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=measure.nucleus_columns(pixel_size))
    )
    # Labels downsampled by nearest neighbour, the image through the same conversion.
    step = int(np.ceil(max(height, width) / OVERLAY_SIDE))
    overlay = plots.overlay(
        convert(pixels[::step, ::step]), prediction=labels[::step, ::step], as_uint8=True
    )
    return LargeResult(labels, table, overlay, scale, len(blocks), cut, duplicates)


def _scale(net, pixels, convert, settings, parts) -> float:
    """The rescaling factor of the whole image: kept in ``parts``, estimated on a mosaic of
    crops (see :func:`size_mosaic`) when the settings ask for an estimate."""
    from unet_tf import inference

    kept = parts.load("scale") if parts else None
    if kept is not None:
        return float(kept["scale"])
    mosaic = size_mosaic(pixels, convert) if inference._estimated(settings) else None
    scale = inference.image_scale(net, mosaic, settings)
    if parts:
        parts.save("scale", scale=np.array(scale))
    return scale


def _owned_nuclei(local, rows, cols, image_shape) -> tuple[np.ndarray, int]:
    """The nuclei of an extended block whose bounding box starts in its core, and how many
    of them reach an inner edge of the extended block (possibly cut)."""
    (y0, y1, top, bottom), (x0, x1, left, right) = rows, cols
    height, width = image_shape
    keep = np.zeros(int(local.max()) + 1, bool)
    cut = 0
    for index, box in enumerate(ndimage.find_objects(local), start=1):
        if box is None:
            continue
        box_rows, box_cols = box
        if y0 <= top + box_rows.start < y1 and x0 <= left + box_cols.start < x1:
            keep[index] = True
            inner_edge = (
                (box_rows.start == 0 and top > 0)
                or (box_cols.start == 0 and left > 0)
                or (box_rows.stop == local.shape[0] and bottom < height)
                or (box_cols.stop == local.shape[1] and right < width)
            )
            cut += bool(inner_edge)
    return np.where(keep[local], local, 0), cut


def _place(owned, target, next_label) -> tuple[np.ndarray, int]:
    """The labels a block writes into ``target`` (the labels so far, under the extended
    block), numbered on from ``next_label``, and how many of its nuclei it drops as found
    twice.

    A nucleus on a seam that the neighbouring block found too (mostly taken already) is
    dropped; otherwise only the pixels still free are written.
    """
    from unet_tf import postprocess

    sizes = np.bincount(owned.ravel(), minlength=int(owned.max()) + 1)
    taken = np.bincount(owned[target > 0].ravel(), minlength=sizes.size)
    twice = (sizes > 0) & (taken * 2 > sizes)
    twice[0] = False
    kept = postprocess.relabel_sequential(np.where(twice[owned] | (target > 0), 0, owned))
    written = np.where(kept > 0, kept.astype(np.uint32) + np.uint32(next_label - 1), 0)
    return written.astype(np.uint32), int(twice.sum())
