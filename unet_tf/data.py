"""Readers for the DSB2018 Kaggle layout, the dataset index and the fixed validation split.

The layout is ``<root>/<ImageId>/images/<ImageId>.png`` with, for training images,
one binary PNG per nucleus in ``<root>/<ImageId>/masks/``.

Decisions about imperfect files, made once here and documented:

* Images of any flavour (grayscale, grayscale + alpha, RGB, RGBA, palette; 8 or 16 bit)
  become float32 arrays in [0, 1] with a fixed channel count. The alpha channel is dropped
  (it is fully opaque throughout DSB2018); grayscale is repeated to three channels, and
  colour is reduced to luminance when one channel is asked for.
* A mask whose size differs from its image raises ``ValueError`` naming the file: there is
  no safe way to place it.
* An empty mask (no foreground pixel) is skipped with a :class:`MaskWarning`; it does not
  count as a nucleus.
* A mask that is not binary is read as "nucleus where > 0" with a :class:`MaskWarning`.
* Pixels claimed by more than one mask stay with the first mask in file-name order, with a
  :class:`MaskWarning` giving the pixel count; ``on_overlap="raise"`` makes this an error.
* An unreadable image or mask (missing, empty, truncated, not an image) raises
  ``FileNotFoundError`` or ``ValueError`` naming the file.
"""

import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from unet_tf.decoding import open_pixels, read_image
from unet_tf.files import atomic_path

IMAGING_TYPES = ("fluorescence", "brightfield", "stained")
# The columns of build_index; the last three come from the labels.
_INDEX_COLUMNS = [
    "image_id",
    "path",
    "height",
    "width",
    "channels",
    "imaging_type",
    "nucleus_count",
    "median_nucleus_area",
    "coverage",
]


class MaskWarning(UserWarning):
    """A mask file was imperfect (empty, not binary, overlapping) and was read anyway."""


def image_file(sample_dir: str | Path) -> Path:
    """Return the image file of a Kaggle-layout sample folder ``<id>/images/<id>.png``.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``images/`` subfolder or no image in it.
    """
    sample_dir = Path(sample_dir)
    images_dir = sample_dir / "images"
    expected = images_dir / f"{sample_dir.name}.png"
    if expected.is_file():
        return expected
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{sample_dir}: no images/ folder (expected {expected})")
    candidates = sorted(p for p in images_dir.iterdir() if p.is_file())
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{images_dir}: expected one image file named {expected.name}, "
            f"found {len(candidates)} files"
        )
    return candidates[0]


def mask_files(sample_dir: str | Path) -> list[Path]:
    """List the per-nucleus mask files of a sample folder, sorted by name.

    Raises
    ------
    FileNotFoundError
        If the sample has no ``masks/`` folder (stage1_test images have none).
    """
    masks_dir = Path(sample_dir) / "masks"
    if not masks_dir.is_dir():
        raise FileNotFoundError(
            f"{Path(sample_dir)}: no masks/ folder, so there are no labels for this image "
            "(test images have none)"
        )
    return sorted(p for p in masks_dir.iterdir() if p.is_file() and not p.name.startswith("."))


def read_mask(path: str | Path) -> np.ndarray:
    """Read one per-nucleus mask file as a 2-D boolean array (``True`` where > 0).

    A mask with values other than 0 and its maximum gives a :class:`MaskWarning`.
    """
    path = Path(path)
    pixels = open_pixels(path)
    if pixels.ndim == 3:
        # A colour mask counts a pixel as foreground when any colour channel is set.
        pixels = pixels[..., : min(pixels.shape[-1], 3)].max(axis=-1)
    if pixels.ndim != 2:
        raise ValueError(f"{path}: unexpected mask shape {pixels.shape}")
    foreground = pixels > 0
    # A binary mask holds 0 and one other value; checking that costs two passes, not a sort.
    if foreground.any() and np.any(pixels[foreground] != pixels.max()):
        warnings.warn(
            f"{path}: mask is not binary; pixels > 0 are taken as the nucleus",
            MaskWarning,
            stacklevel=2,
        )
    return foreground


def read_labels(
    sample_dir: str | Path,
    shape: Sequence[int] | None = None,
    on_overlap: str = "warn",
) -> np.ndarray:
    """Combine the per-nucleus masks of a sample into one int32 instance-label image.

    Parameters
    ----------
    sample_dir : str or Path
        A Kaggle-layout sample folder with a ``masks/`` subfolder.
    shape : sequence of int, optional
        ``(height, width)`` of the image; every mask must have it. Read from the image
        file when not given.
    on_overlap : {"warn", "raise"}
        What to do when masks claim the same pixels. With ``"warn"`` the pixels stay with
        the first mask in file-name order.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` int32: 0 for background, 1..N for the N non-empty masks in
        file-name order.

    Raises
    ------
    FileNotFoundError
        If the sample has no ``masks/`` folder.
    ValueError
        If a mask's size differs from the image, a mask cannot be read, or masks overlap
        and ``on_overlap="raise"``.
    """
    if on_overlap not in ("warn", "raise"):
        raise ValueError(f"on_overlap must be 'warn' or 'raise', got {on_overlap!r}")
    sample_dir = Path(sample_dir)
    files = mask_files(sample_dir)
    if shape is None:
        shape = read_image(image_file(sample_dir), channels=1).shape[:2]
    shape = tuple(int(s) for s in shape[:2])
    labels = np.zeros(shape, dtype=np.int32)
    overlapping_pixels, empty = 0, []
    next_label = 1
    for path in files:
        mask = read_mask(path)
        if mask.shape != shape:
            raise ValueError(
                f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from the "
                f"image size {shape[1]}x{shape[0]}"
            )
        pixels = np.flatnonzero(mask)
        if pixels.size == 0:
            empty.append(path.name)
            continue
        # Work on the mask's own pixels only: masks are small and images hold hundreds.
        free = labels.flat[pixels] == 0
        if not free.all():
            if on_overlap == "raise":
                raise ValueError(f"{path}: {int((~free).sum())} pixels overlap earlier masks")
            overlapping_pixels += int((~free).sum())
        labels.flat[pixels[free]] = next_label
        next_label += 1
    if empty:
        warnings.warn(
            f"{sample_dir.name}: skipped {len(empty)} empty mask(s): {', '.join(empty[:5])}",
            MaskWarning,
            stacklevel=2,
        )
    if overlapping_pixels:
        warnings.warn(
            f"{sample_dir.name}: {overlapping_pixels} pixels claimed by more than one mask "
            "were kept by the first mask",
            MaskWarning,
            stacklevel=2,
        )
    return labels


def _label_cache_file(cache_dir: Path, sample_dir: Path) -> Path:
    return cache_dir / f"{sample_dir.name}.png"


def read_labels_cached(
    sample_dir: str | Path, shape: Sequence[int], cache_dir: str | Path | None
) -> np.ndarray:
    """Like :func:`read_labels`, through a cache of 16-bit label PNGs in ``cache_dir``.

    Combining hundreds of full-size mask PNGs per image is the slow part of loading
    DSB2018, so the result is kept as one PNG per image. A cache file older than the
    sample's ``masks/`` folder is rebuilt; warnings about the masks are given again only
    when the cache is rebuilt.
    """
    sample_dir = Path(sample_dir)
    if cache_dir is None:
        return read_labels(sample_dir, shape=shape)
    cache_file = _label_cache_file(Path(cache_dir), sample_dir)
    masks_dir = sample_dir / "masks"
    if cache_file.is_file() and masks_dir.is_dir():
        if cache_file.stat().st_mtime >= masks_dir.stat().st_mtime:
            with Image.open(cache_file) as cached:
                labels = np.asarray(cached).astype(np.int32)
            if labels.shape == tuple(shape[:2]):
                return labels
    labels = read_labels(sample_dir, shape=shape)
    if labels.max(initial=0) <= np.iinfo(np.uint16).max:
        with atomic_path(cache_file) as partial:
            Image.fromarray(labels.astype(np.uint16)).save(partial, format="PNG")
    return labels


def load_samples(
    root: str | Path,
    ids: Iterable[str] | None = None,
    channels: int = 3,
    with_labels: bool = True,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """Read many samples in parallel threads (image decoding releases the GIL).

    Parameters
    ----------
    root : str or Path
        A Kaggle-layout folder.
    ids : iterable of str, optional
        Image ids to read, in this order; all samples under ``root`` by default.
    channels : {1, 3}
        Channels of the images.
    with_labels : bool
        Also read the instance labels.
    cache_dir : str or Path, optional
        Label cache folder (see :func:`read_labels_cached`); no cache by default.
    workers : int, optional
        Threads to use; the number of CPUs by default.

    Returns
    -------
    list of (image_id, image, labels)

    Raises
    ------
    FileNotFoundError
        If a sample folder or its image is missing (or its masks, with labels).
    ValueError
        If an id is given twice, or a file cannot be read.
    """
    root = Path(root)
    if ids is not None:
        ids = list(ids)
        repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
        if repeated:
            raise ValueError(f"image ids given more than once: {repeated[:5]}")
    sample_dirs = list_sample_dirs(root) if ids is None else [root / i for i in ids]
    for sample_dir in sample_dirs:
        if not sample_dir.is_dir():
            raise FileNotFoundError(f"{sample_dir}: no such sample folder")

    def load(sample_dir: Path):
        image = read_image(image_file(sample_dir), channels=channels)
        labels = None
        if with_labels:
            labels = read_labels_cached(sample_dir, image.shape[:2], cache_dir)
        return sample_dir.name, image, labels

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        return list(pool.map(load, sample_dirs))


def iter_samples(
    root: str | Path,
    ids: Sequence[str] | None = None,
    with_labels: bool = False,
    cache_dir: str | Path | None = None,
    chunk_size: int = 16,
) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """Yield ``(image_id, image, labels)`` for a folder of images, a few at a time.

    :func:`load_samples` reads ``chunk_size`` images at once in parallel threads, so memory
    stays flat however many images there are (the 3,000 of stage 2, say). Test images have
    no labels: ``labels`` is None unless ``with_labels``. This is the one reader of a test
    set, used by ``04-submission``, the Kaggle kernel and the benchmarks.

    Raises
    ------
    ValueError
        If ``chunk_size`` is below 1 or an id is given twice (before anything is read).
    FileNotFoundError
        As :func:`load_samples`, when the chunk holding the missing sample is reached.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    ids = [p.name for p in list_sample_dirs(root)] if ids is None else list(ids)
    repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"image ids given more than once: {repeated[:5]}")
    for start in range(0, len(ids), chunk_size):
        chunk = ids[start : start + chunk_size]
        yield from load_samples(root, ids=chunk, with_labels=with_labels, cache_dir=cache_dir)


def list_sample_dirs(root: str | Path) -> list[Path]:
    """List the sample folders under a Kaggle-layout root, sorted by image id.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist or holds no sample folder (run ``make data``).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder (run `make data` to create it)")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise FileNotFoundError(f"{root}: holds no image folders (run `make data`)")
    return dirs


def imaging_type(image: np.ndarray) -> str:
    """Classify an image by its pixels as ``fluorescence``, ``brightfield`` or ``stained``.

    Fluorescence images have a dark background (median brightness below 0.5); of the bright
    ones, those whose channels differ (mean spread between the largest and smallest channel
    above 0.02) carry a colour stain such as H&E, the rest are grayscale brightfield. On
    DSB2018 stage 1 the clusters are far apart: no image lies near either threshold.
    """
    if image.ndim == 2:
        image = image[..., None]
    brightness = np.median(image.mean(axis=-1))
    if brightness < 0.5:
        return "fluorescence"
    spread = float((image.max(axis=-1) - image.min(axis=-1)).mean())
    return "stained" if spread > 0.02 else "brightfield"


def build_index(
    root: str | Path,
    with_labels: bool = True,
    cache_dir: str | Path | None = None,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Describe every sample under a Kaggle-layout root, one row per image.

    Parameters
    ----------
    root : str or Path
        A Kaggle-layout folder: a training set, or with ``with_labels=False`` a test set
        whose samples have no ``masks/`` folder.
    with_labels : bool
        Read the instance labels and fill the label columns; without labels those columns
        are there but hold NaN, so that the indexes of a training and a test set concatenate.
    cache_dir : str or Path, optional
        The label cache of :func:`read_labels_cached`; no cache by default.
    ids : sequence of str, optional
        The images to describe, in this order; all samples under ``root`` by default.

    Returns
    -------
    pandas.DataFrame
        The columns ``image_id``, ``path`` (the image file), ``height``, ``width``,
        ``channels`` (of the file as stored), ``imaging_type`` (see :func:`imaging_type`),
        and the label columns ``nucleus_count``, ``median_nucleus_area`` (pixels) and
        ``coverage`` (the fraction of the image's pixels that are nucleus).

    Raises
    ------
    FileNotFoundError
        If ``root`` holds no sample folders, or, with labels, a sample has no masks.
    """
    rows = []
    # A few images at a time, so that indexing a large folder does not hold it in memory.
    samples = iter_samples(root, ids, with_labels=with_labels, cache_dir=cache_dir)
    for image_id, image, labels in samples:
        path = image_file(Path(root) / image_id)
        with Image.open(path) as stored:
            stored_channels = len(stored.getbands())
        row = {
            "image_id": image_id,
            "path": str(path),
            "height": image.shape[0],
            "width": image.shape[1],
            "channels": stored_channels,
            "imaging_type": imaging_type(image),
        }
        if labels is not None:
            areas = np.bincount(labels.ravel())[1:]
            row["nucleus_count"] = int(labels.max())
            row["median_nucleus_area"] = float(np.median(areas)) if areas.size else 0.0
            row["coverage"] = float((labels > 0).mean())
        rows.append(row)
    # Without labels the label columns are there but empty (NaN): one set of columns always.
    return pd.DataFrame(rows, columns=_INDEX_COLUMNS)


def make_validation_split(
    index: pd.DataFrame, fraction: float = 0.12, seed: int = 2018, stratify: str = "imaging_type"
) -> list[str]:
    """Choose validation image ids, stratified by a column of the index (seeded).

    Every stratum gives ``round(fraction * size)`` images, and at least one when it has
    two or more, so that rare imaging types are judged too.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
    rng = np.random.default_rng(seed)
    chosen = []
    for _, group in sorted(index.groupby(stratify), key=lambda item: str(item[0])):
        ids = sorted(group["image_id"])
        count = max(1 if len(ids) > 1 else 0, round(fraction * len(ids)))
        chosen.extend(rng.choice(ids, size=count, replace=False).tolist())
    return sorted(chosen)


def save_ids(path: str | Path, ids: Iterable[str], header: str = "") -> None:
    """Write image ids to a text file, one per line, sorted, after optional ``#`` comment lines."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(comments + "".join(f"{image_id}\n" for image_id in sorted(ids)))


def load_ids(path: str | Path) -> list[str]:
    """Read image ids written by :func:`save_ids` (blank lines and ``#`` comments ignored).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If an id appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such id list")
    ids = [line.strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i and not i.startswith("#")]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: some image ids appear more than once")
    return ids


def train_validation_ids(
    root: str | Path, validation_ids_path: str | Path
) -> tuple[list[str], list[str]]:
    """Split the sample folders under ``root`` into training and validation ids.

    Raises
    ------
    ValueError
        If a validation id is missing from ``root``.
    """
    return split_ids([p.name for p in list_sample_dirs(root)], validation_ids_path, root)


def split_ids(
    all_ids: Sequence[str], validation_ids_path: str | Path, root: str | Path = "the data"
) -> tuple[list[str], list[str]]:
    """Split ``all_ids`` (of the dataset at ``root``) into training and validation ids.

    Raises
    ------
    ValueError
        If a validation id is not in ``all_ids``.
    """
    validation = load_ids(validation_ids_path)
    missing = sorted(set(validation) - set(all_ids))
    if missing:
        raise ValueError(
            f"{validation_ids_path}: {len(missing)} validation ids are not in {root}, "
            f"e.g. {missing[0]}"
        )
    held_out = set(validation)
    return [i for i in all_ids if i not in held_out], validation


def nucleus_areas(samples: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One row per nucleus of labelled samples: ``image_id``, ``imaging_type`` and ``area``."""
    rows = []
    for image_id, image, labels in samples:
        areas = np.bincount(labels.ravel())[1:]
        kind = imaging_type(image)
        rows += [(image_id, kind, int(area)) for area in areas if area > 0]
    return pd.DataFrame(rows, columns=["image_id", "imaging_type", "area"])


def oddities(samples: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """Things in labelled samples that a model or a metric could trip over, one row per image.

    Columns: masks in several pieces (one nucleus, several connected regions), nuclei under
    10 pixels, nuclei touching the image edge, and nuclei touching another (those lost when
    the union of the masks is cut into objects by connected components alone).
    """
    from skimage.measure import label as connected_regions

    rows = {}
    for image_id, _, labels in samples:
        count = int(labels.max())
        areas = np.bincount(labels.ravel())[1:]
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        rows[image_id] = {
            "masks in several pieces": int(connected_regions(labels, connectivity=2).max() - count),
            "nuclei under 10 px": int(((areas > 0) & (areas < 10)).sum()),
            "nuclei touching the image edge": int((edge > 0).sum()),
            "nuclei touching another": int(
                count - connected_regions(labels > 0, connectivity=1).max()
            ),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("image_id")
