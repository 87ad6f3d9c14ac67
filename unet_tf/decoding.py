"""Image files to pixels, in one place: PNG (16-bit colour too), JPEG, and TIFF with its axes.

Every reader of the project comes here: the training data (:mod:`unet_tf.data`), ``predict``
and the viewer. :func:`read_pixels` gives a file's raw values in its own type,
:func:`read_image` float32 in [0, 1] with a fixed channel count, and :func:`read_stack`
the 2-D planes of a microscope file.

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
from PIL import Image, UnidentifiedImageError

# ITU-R BT.601 luma weights, the usual choice for turning RGB into one channel.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

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
    path = Path(path)
    if plane is not None and max_projection:
        raise ValueError(f"{path}: give a plane or the maximum projection, not both")
    if path.suffix.lower() not in (".tif", ".tiff"):
        pixels = read_pixels(path)
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


def open_pixels(path: Path) -> np.ndarray:
    """Decode an image file with Pillow into a numpy array, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes)")
    if _is_16bit_colour_png(path):
        return _decode_png_16bit(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path)
    # Stitched mosaics and whole slides pass Pillow's guard against decompression bombs
    # (about 179 megapixels), which would stop them with an error; the files are the user's
    # own, so the guard is lifted while they are read.
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode == "1":
                image = image.convert("L")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the image ({error})") from error
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def _read_tiff(path: Path) -> np.ndarray:
    # Pillow reads few TIFF flavours (not 16-bit colour, not most microscope files), so
    # TIFFs go through tifffile, with their axes (see read_stack). A stack or a file of
    # several channels is refused here rather than cut down silently to its first plane.
    stack = read_stack(path)
    if stack.is_stack:
        raise ValueError(
            f"{path}: a stack of {len(stack.planes)} planes (axes {stack.source_axes}, shape "
            f"{stack.source_shape}) where one 2-D image was expected; choose a plane or the "
            "maximum projection (predict --plane N or --max-projection)"
        )
    return stack.planes[0]


def _is_16bit_colour_png(path: Path) -> bool:
    # Pillow reduces 16-bit colour PNGs to 8 bits, so those are decoded by TensorFlow
    # instead. The PNG header holds the bit depth at byte 24 and the colour type at 25.
    with open(path, "rb") as handle:
        header = handle.read(26)
    return (
        header[:8] == b"\x89PNG\r\n\x1a\n"
        and len(header) == 26
        and header[24] == 16
        and header[25] in (2, 6)
    )


def _decode_png_16bit(path: Path) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.io.decode_png(tf.io.read_file(str(path)), dtype=tf.uint16).numpy()
    except tf.errors.OpError as error:
        raise ValueError(f"{path}: cannot read the image ({error.message})") from error


def value_range(pixels: np.ndarray, path: str | Path = "image") -> tuple[float, float]:
    """The raw values that map to 0 and 1 when an image is read (see :func:`pixels_to_image`).

    8-bit images span 0..255 and 16-bit ones 0..65535; float images already in [0, 1] are
    kept, others are scaled by their own range. A block of a large image is converted with
    the range of the whole image, so that all blocks are scaled alike.

    Raises
    ------
    ValueError
        If the values cannot be an image (negative or above 16-bit integers, NaN, an
        unsupported type); the message names ``path``.
    """
    if pixels.dtype == np.uint8:
        return 0.0, 255.0
    if pixels.dtype == np.uint16 or (pixels.dtype.kind in "iu" and pixels.max(initial=0) > 255):
        # Pillow returns 16-bit grayscale as uint16 or int32 ("I" mode) depending on the file.
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 65535:
            raise ValueError(f"{path}: integer pixel values outside 0..65535")
        return 0.0, 65535.0
    if pixels.dtype.kind in "iu":
        return 0.0, 255.0
    if pixels.dtype == np.bool_:
        return 0.0, 1.0
    if pixels.dtype.kind == "f":
        if not np.all(np.isfinite(pixels)):
            raise ValueError(f"{path}: the image holds NaN or infinite values")
        low, high = float(pixels.min()), float(pixels.max())
        if low >= 0.0 and high <= 1.0:
            return 0.0, 1.0
        return low, max(high, low + 1e-12)
    raise ValueError(f"{path}: unsupported pixel type {pixels.dtype}")


def sample_stride(shape: tuple[int, ...], pixels: int) -> int:
    """The step ``s`` such that every ``s``-th row and column of an image of ``shape`` is at
    most ``pixels`` pixels: the regular subsample whole-image numbers are estimated on."""
    return max(1, int(np.ceil(np.sqrt(shape[0] * shape[1] / pixels))))


def _to_unit_range(
    pixels: np.ndarray, path: Path, values: tuple[float, float] | None = None
) -> np.ndarray:
    low, high = values or value_range(pixels, path)
    if (low, high) == (0.0, 1.0):
        return pixels.astype(np.float32)
    return ((pixels.astype(np.float32) - np.float32(low)) / np.float32(high - low)).clip(0, 1)


def read_pixels(path: str | Path) -> np.ndarray:
    """Decode an image file into its raw pixel values, in the file's own type and channels.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is empty, truncated or not an image.
    """
    return open_pixels(Path(path))


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image file as float32 in [0, 1] with shape ``(height, width, channels)``.

    Parameters
    ----------
    path : str or Path
        A PNG, JPEG or TIFF file: grayscale, grayscale + alpha, RGB, RGBA or palette,
        8 or 16 bit.
    channels : {1, 3}
        Channels of the result. Grayscale is repeated to three channels; colour becomes
        luminance for one channel. Alpha is always dropped.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is empty, truncated or not an image, or ``channels`` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    path = Path(path)
    return pixels_to_image(open_pixels(path), path, channels)


def pixels_to_image(
    pixels: np.ndarray,
    path: str | Path = "image",
    channels: int = 3,
    values: tuple[float, float] | None = None,
) -> np.ndarray:
    """Float32 ``(height, width, channels)`` in [0, 1] from raw pixels, as :func:`read_image`.

    ``path`` only names the source in error messages. ``values`` (see :func:`value_range`)
    are the raw values mapped to 0 and 1, by default those of ``pixels`` themselves.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    image = _to_unit_range(pixels, path, values)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{path}: unexpected image shape {pixels.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{path}: the image has no pixels (shape {pixels.shape})")
    # Drop alpha: grayscale + alpha keeps one channel, RGBA keeps three.
    image = image[..., :1] if image.shape[-1] in (1, 2) else image[..., :3]
    if channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif channels == 1 and image.shape[-1] == 3:
        image = (image @ LUMA_WEIGHTS)[..., None]
    return np.ascontiguousarray(image, dtype=np.float32)
