"""Microscope files: the axes of TIFF stacks, and which planes and channel to segment.

Microscopes write more than one 2-D image per file: z-stacks (axis ``Z``), time series
(``T``), several channels (``C``, a nuclear stain beside others), and colour samples
(``S``: RGB). tifffile reads the axes of a file's first series, from ImageJ hyperstack and
OME-TIFF metadata where they are there. :func:`read_stack` turns a file into the 2-D planes
to segment, each case on purpose, never silently:

- ``Z``, ``T`` (and the unnamed page axes ``I`` and ``Q`` of a plain multi-page TIFF):
  every plane is segmented, in order; ``plane`` picks one (counting in file order), and
  ``max_projection`` segments the maximum projection over them all;
- ``C``, 2 samples per pixel, or more than 4: ``channel`` picks the nuclear channel;
  without it such a file is refused with a message naming the file, its axes and shape,
  and the option to use;
- ``S`` of 3 or 4 (RGB, RGBA) stays colour, as a PNG would be; ``channel`` may still pick
  one of its channels (the blue DAPI channel of an RGB composite, say).

Other formats (PNG, JPEG) hold one plane.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PLANE_AXES = "TZIQ"
CHANNEL_AXES = "CS"


@dataclass
class Stack:
    """The planes of an image file chosen for segmentation.

    Attributes
    ----------
    planes : list of numpy.ndarray
        Raw pixels of each plane: ``(height, width)`` or ``(height, width, samples)``.
    axes : str
        The plane axes kept, in file order (``"Z"``, ``"TZ"``, or ``""`` for one plane).
    shape : tuple of int
        The size of each of ``axes``; ``planes`` runs over them in C order.
    source_axes : str
        The axes of the whole file as tifffile reads them (``"TZCYX"``, ``"YXS"``, ...).
    source_shape : tuple of int
        The shape of the whole file.
    """

    planes: list
    axes: str
    shape: tuple
    source_axes: str
    source_shape: tuple

    @property
    def is_stack(self) -> bool:
        """Whether the file gives more than one plane to segment."""
        return bool(self.axes)


def _describe(path: Path, axes: str, shape: tuple) -> str:
    return f"{path}: axes {axes}, shape {tuple(shape)}"


def _tiff_series(path: Path) -> tuple[np.ndarray, str]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            return series.asarray(), series.axes
    except Exception as error:  # tifffile raises many types for broken files.
        raise ValueError(f"{path}: cannot read the TIFF image ({error})") from error


def read_stack(
    path: str | Path,
    channel: int | None = None,
    plane: int | None = None,
    max_projection: bool = False,
) -> Stack:
    """Read an image file as the planes to segment (see the module's description).

    Parameters
    ----------
    path : str or Path
        A TIFF (any axes), PNG or JPEG file.
    channel : int, optional
        The channel (``C`` axis, or samples of a non-RGB file) holding the nuclei; needed
        when there are several; counted from 0.
    plane : int, optional
        Segment only this plane of a stack, counted from 0 in file order.
    max_projection : bool
        Segment the maximum projection over the plane axes.

    Raises
    ------
    ValueError
        If the file cannot be read, has several channels and no ``channel`` is given, or
        ``channel`` or ``plane`` is out of range; the message names the file, its axes and
        shape, and what to do.
    """
    from unet_tf import data

    path = Path(path)
    if plane is not None and max_projection:
        raise ValueError(f"{path}: give a plane or the maximum projection, not both")
    if path.suffix.lower() not in (".tif", ".tiff"):
        pixels = data.read_pixels(path)
        axes = "YX" if pixels.ndim == 2 else "YXS"
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        if path.stat().st_size == 0:
            raise ValueError(f"{path}: the file is empty (0 bytes)")
        pixels, axes = _tiff_series(path)
    source_axes, source_shape = axes, pixels.shape
    described = _describe(path, source_axes, source_shape)
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"{described}: no Y and X axes to segment")

    # The channel axis: C, or samples that are not colour (2, or more than 4).
    colour = "S" in axes and pixels.shape[axes.index("S")] in (3, 4) and "C" not in axes
    candidates = [axis for axis in CHANNEL_AXES if axis in axes]
    if len(candidates) == 2:
        raise ValueError(f"{described}: both channels (C) and samples (S); not supported")
    channel_axis = candidates[0] if candidates else None
    if channel_axis and pixels.shape[axes.index(channel_axis)] == 1:
        # A channel axis of one is no choice: drop it.
        pixels = np.take(pixels, 0, axis=axes.index(channel_axis))
        axes, channel_axis = axes.replace(channel_axis, ""), None
    if channel is not None:
        if channel_axis is None:
            if channel != 0:
                raise ValueError(f"{described}: one channel only; --channel {channel} is too big")
        else:
            count = pixels.shape[axes.index(channel_axis)]
            if not 0 <= channel < count:
                raise ValueError(f"{described}: --channel must be 0 to {count - 1}, got {channel}")
            pixels = np.take(pixels, channel, axis=axes.index(channel_axis))
            axes = axes.replace(channel_axis, "")
    elif channel_axis and not colour:
        count = pixels.shape[axes.index(channel_axis)]
        raise ValueError(
            f"{described}: {count} channels; say which one holds the nuclei with "
            f"--channel N (0 to {count - 1})"
        )

    # Unknown axes other than the plane axes cannot be treated on purpose.
    unknown = [axis for axis in axes if axis not in PLANE_AXES + "YXS"]
    if unknown:
        raise ValueError(f"{described}: axes {''.join(unknown)} are not supported")
    plane_axes = "".join(axis for axis in axes if axis in PLANE_AXES)
    # Planes first in file order, then Y, X and any colour samples.
    order = [axes.index(axis) for axis in plane_axes]
    order += [axes.index("Y"), axes.index("X")] + ([axes.index("S")] if "S" in axes else [])
    pixels = np.transpose(pixels, order)
    plane_shape = pixels.shape[: len(plane_axes)]
    flat = pixels.reshape((-1, *pixels.shape[len(plane_axes) :]))
    if max_projection:
        return Stack([flat.max(axis=0)], "", (), source_axes, source_shape)
    if plane is not None:
        if not 0 <= plane < len(flat):
            raise ValueError(f"{described}: --plane must be 0 to {len(flat) - 1}, got {plane}")
        return Stack([flat[plane]], "", (), source_axes, source_shape)
    if len(flat) == 1:
        return Stack([flat[0]], "", (), source_axes, source_shape)
    return Stack(list(flat), plane_axes, tuple(plane_shape), source_axes, source_shape)


def write_label_stack(path: str | Path, planes: list, axes: str, shape: tuple) -> None:
    """Write the labels of every plane as one TIFF with the stack's axes, atomically.

    Labels fit 16 bits up to 65,535 nuclei per plane (32 bits above). ``T`` and ``Z`` go
    into an ImageJ hyperstack, which Fiji and napari open with its axes; other plane axes
    are written with tifffile's own axes metadata.
    """
    import tifffile

    from unet_tf import files

    stack = np.stack(planes).reshape((*shape, *planes[0].shape))
    wide = stack.max(initial=0) > np.iinfo(np.uint16).max
    stack = stack.astype(np.uint32 if wide else np.uint16)
    imagej = not wide and set(axes) <= set("TZ")
    with files.atomic_path(path) as partial:
        if imagej:
            tifffile.imwrite(partial, stack, imagej=True, metadata={"axes": axes + "YX"})
        else:
            tifffile.imwrite(partial, stack, metadata={"axes": axes + "YX"}, compression="zlib")
