"""Datasets to train on: DSB2018 in its Kaggle layout, and any folder of images and masks.

A *folder dataset* is what most people have after annotating their own images::

    my_data/
        images/   a.png  b.tif  ...
        masks/    a.png  b.tif  ...     (or labels/)

Image and mask share the file stem. A mask is either *binary* (semantic, one class: 0 is
background, 1 or 255 the class, e.g. a lung) or an *instance label image* (0 background,
1..N one nucleus each). Images and masks may be PNG or TIFF, 8 or 16 bit; signed 16-bit CT
slices are read through an intensity window (``window=(-1000, 400)`` in Hounsfield units,
say), mapped to [0, 1]. Both kinds of dataset give the same ``(id, image, labels)``
samples, so they feed the same ``tf.data`` pipeline.

:func:`open_dataset` takes a known name (``"dsb2018"``, ``"lung_ct"``) or a folder, and
finds its committed validation split where it has one.
"""

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unet_tf import config, data, decoding

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_FOLDERS = ("masks", "labels")
TASKS = ("instances", "semantic")
# Values a binary mask may hold: background 0, the class 1 (or 255, as image editors save it).
BINARY_VALUES = {0, 1, 255}


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """The image files of a folder by stem; two files of one stem are an error."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.name[0] != ".":
            if path.stem in found:
                raise ValueError(
                    f"{folder}: two files named {path.stem} ({found[path.stem].name} and "
                    f"{path.name}); keep one"
                )
            found[path.stem] = path
    return found


def is_folder_dataset(root: str | Path) -> bool:
    """Whether ``root`` has an ``images/`` folder beside a ``masks/`` or ``labels/`` one."""
    root = Path(root)
    return (root / "images").is_dir() and any((root / name).is_dir() for name in MASK_FOLDERS)


def folder_pairs(root: str | Path) -> dict[str, tuple[Path, Path]]:
    """The ``(image, mask)`` files of a folder dataset by id (the shared file stem).

    Raises
    ------
    FileNotFoundError
        If ``root`` is missing, has no ``images/`` or no ``masks/``/``labels/`` folder, or
        holds no images.
    ValueError
        If an image has no mask or a mask no image (the message names them), or the
        dataset has both ``masks/`` and ``labels/``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder")
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}: no images/ folder (expected images/ and masks/)")
    mask_dirs = [root / name for name in MASK_FOLDERS if (root / name).is_dir()]
    if not mask_dirs:
        raise FileNotFoundError(f"{root}: no masks/ or labels/ folder beside images/")
    if len(mask_dirs) > 1:
        raise ValueError(f"{root}: both masks/ and labels/; keep the one with the annotations")
    images, masks = _files_by_stem(root / "images"), _files_by_stem(mask_dirs[0])
    if not images:
        raise FileNotFoundError(f"{root / 'images'}: the folder holds no images")
    for what, names, other in (
        ("image", sorted(set(images) - set(masks)), mask_dirs[0]),
        ("mask", sorted(set(masks) - set(images)), root / "images"),
    ):
        if names:
            example = (images if what == "image" else masks)[names[0]]
            raise ValueError(
                f"{example}: {len(names)} {what}(s) without a file of the same name in "
                f"{other} ({', '.join(names[:5])})"
            )
    return {stem: (images[stem], masks[stem]) for stem in sorted(images)}


def read_folder_image(path: str | Path, window: Sequence[float] | None = None) -> np.ndarray:
    """Read one image of a folder dataset as float32 ``(height, width, 3)`` in [0, 1].

    With ``window=(low, high)`` the raw values (Hounsfield units of a CT slice, say) are
    clipped to the window and scaled to [0, 1]; without it the file is read as
    :func:`unet_tf.decoding.read_image` reads it.

    Raises
    ------
    ValueError
        If the file is unreadable, a stack, holds negative values without a window, or the
        window is empty.
    """
    path = Path(path)
    pixels = decoding.read_pixels(path)
    if window is None:
        if pixels.dtype.kind == "i" and pixels.min(initial=0) < 0:
            raise ValueError(
                f"{path}: signed pixel values (down to {int(pixels.min())}), as in CT; give an "
                "intensity window, e.g. window_min=-1000 and window_max=400"
            )
        return decoding.pixels_to_image(pixels, path, channels=3)
    return apply_window(pixels, window, path)


def recorded_window(parameters: dict) -> tuple[float, float] | None:
    """The intensity window training ``parameters`` name (``window_min``, ``window_max``;
    a record or ``TrainingConfig`` fields), or None where both are 0 or absent.

    >>> recorded_window({"window_min": -1000.0, "window_max": 400.0})
    (-1000.0, 400.0)
    >>> recorded_window({}) is None
    True
    """
    window = (parameters.get("window_min", 0.0), parameters.get("window_max", 0.0))
    return window if any(window) else None


def apply_window(
    pixels: np.ndarray, window: Sequence[float], path: str | Path = "image"
) -> np.ndarray:
    """Raw one-channel values (Hounsfield units, say) clipped to ``window=(low, high)`` and
    scaled to [0, 1], as float32 ``(height, width, 3)``.

    >>> apply_window(np.array([[-2000, -300, 400]]), (-1000, 400))[0, :, 0].tolist()
    [0.0, 0.5, 1.0]

    Raises
    ------
    ValueError
        If the window is empty or the image has several channels; ``path`` names it.
    """
    low, high = (float(value) for value in window)
    if not high > low:
        raise ValueError(f"the intensity window must have low < high, got {low}..{high}")
    if pixels.ndim != 2:
        raise ValueError(f"{path}: an intensity window applies to one-channel images only")
    scaled = (np.clip(pixels.astype(np.float32), low, high) - low) / (high - low)
    return np.repeat(scaled[..., None], 3, axis=-1)


def read_folder_labels(path: str | Path, task: str, shape: Sequence[int]) -> np.ndarray:
    """Read one mask of a folder dataset as int32 labels of ``shape``.

    For ``task="semantic"`` the mask must be binary (values 0, 1 and 255 only); the labels
    are 1 on the class. For ``task="instances"`` the mask is an instance label image (0
    background, one integer per nucleus); a mask of two values only is a binary mask of
    nuclei, cut into nuclei by connected components.

    Raises
    ------
    ValueError
        If the mask is unreadable, a stack or colour image, of another size than its image,
        negative, or not binary where a binary target is asked for.
    """
    from skimage.measure import label as connected_components

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    path = Path(path)
    pixels = decoding.read_pixels(path)
    if pixels.ndim == 3:
        if pixels.shape[-1] in (3, 4) and np.all(pixels[..., :3] == pixels[..., :1]):
            pixels = pixels[..., 0]  # Gray saved as RGB(A).
        else:
            raise ValueError(f"{path}: a colour mask (shape {pixels.shape}); save it as gray")
    if pixels.ndim != 2:
        raise ValueError(f"{path}: unexpected mask shape {pixels.shape}")
    if pixels.shape != tuple(shape[:2]):
        raise ValueError(
            f"{path}: mask size {pixels.shape[1]}x{pixels.shape[0]} differs from its image's "
            f"{shape[1]}x{shape[0]}"
        )
    if pixels.dtype.kind == "f":
        if not np.all(np.isfinite(pixels)) or np.any(pixels != np.round(pixels)):
            raise ValueError(f"{path}: a mask must hold whole numbers")
    if pixels.min(initial=0) < 0:
        raise ValueError(f"{path}: negative values in a mask")
    values = np.unique(pixels)
    if task == "semantic":
        other = sorted(set(values.tolist()) - BINARY_VALUES)
        if other:
            raise ValueError(
                f"{path}: a binary mask (semantic task) may hold 0, 1 and 255 only; found "
                f"{', '.join(str(v) for v in other[:5])}"
                + (" (an instance label image? use task='instances')" if len(values) > 3 else "")
            )
        return (pixels > 0).astype(np.int32)
    if len(values) <= 2:
        return connected_components(pixels > 0, connectivity=1).astype(np.int32)
    return pixels.astype(np.int32)


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset to train and validate on.

    Attributes
    ----------
    name : str
        ``"dsb2018"``, ``"lung_ct"`` or the folder's path as given.
    root : Path
        Its folder.
    layout : str
        ``"kaggle"`` (``<id>/images``, ``<id>/masks``) or ``"folder"`` (``images/``,
        ``masks/``).
    validation_ids : Path or None
        Its committed validation split, where it has one.
    window : tuple of float or None
        The intensity window of its images (CT).
    task : str
        ``"instances"`` (nuclei) or ``"semantic"`` (one class).
    """

    name: str
    root: Path
    layout: str
    validation_ids: Path | None
    window: tuple[float, float] | None = None
    task: str = "instances"

    def ids(self) -> list[str]:
        """Every image id, sorted.

        Raises
        ------
        FileNotFoundError, ValueError
            As :func:`folder_pairs` or :func:`unet_tf.data.list_sample_dirs`.
        """
        if self.layout == "kaggle":
            return [path.name for path in data.list_sample_dirs(self.root)]
        return list(folder_pairs(self.root))

    def load(self, ids: Sequence[str], workers: int | None = None) -> list:
        """The labelled samples ``(id, image, labels)`` of ``ids``, read in parallel threads.

        Raises
        ------
        ValueError
            If an id is not in the dataset, or a file is bad (the message names it).
        """
        if self.layout == "kaggle":
            cache = config.LABEL_CACHE if self.root == Path(config.TRAIN_DIR) else None
            return data.load_samples(self.root, ids=ids, cache_dir=cache, workers=workers)
        pairs = folder_pairs(self.root)
        missing = [image_id for image_id in ids if image_id not in pairs]
        if missing:
            raise ValueError(f"{self.root}: no image named {missing[0]} ({len(missing)} missing)")

        def load_one(image_id: str):
            image_path, mask_path = pairs[image_id]
            image = read_folder_image(image_path, self.window)
            return image_id, image, read_folder_labels(mask_path, self.task, image.shape)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(load_one, ids))


def _known() -> dict[str, dict]:
    """The datasets known by name, from the current configuration."""
    return {
        "dsb2018": {
            "root": Path(config.TRAIN_DIR),
            "validation_ids": Path(config.VALIDATION_IDS),
        },
        "lung_ct": {
            "root": Path(config.LUNG_CT_DIR),
            "validation_ids": config.SPLITS_DIR / "lung_ct_validation_ids.txt",
        },
    }


def open_dataset(
    name: str | Path,
    window: Sequence[float] | None = None,
    task: str = "instances",
) -> Dataset:
    """The dataset called ``name``: ``"dsb2018"``, ``"lung_ct"``, or a folder.

    A folder with ``images/`` and ``masks/`` (or ``labels/``) is a folder dataset; any other
    is taken to be in the Kaggle layout. Only the known datasets come with a committed
    validation split; see :func:`make_split` for a folder's.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist (for the known ones, the message says how to get it).
    ValueError
        If the task is unknown, or a window is given for a DSB2018-layout dataset.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    known = _known().get(str(name))
    root = known["root"] if known else config.resolve(name)
    if not root.is_dir():
        hint = f"run `python -m unet_tf.fetch --dataset {name}`" if known else "check the path"
        raise FileNotFoundError(f"{root}: no such data folder ({hint})")
    layout = "folder" if is_folder_dataset(root) else "kaggle"
    if layout == "kaggle" and window is not None:
        raise ValueError(f"{root}: an intensity window applies to folder datasets only")
    if layout == "kaggle" and task != "instances":
        raise ValueError(f"{root}: a Kaggle-layout dataset holds nuclei (task 'instances')")
    split = known["validation_ids"] if known else None
    window = tuple(float(v) for v in window) if window is not None else None
    return Dataset(str(name), root, layout, split, window, task)


def patient_of(image_id: str, pattern: str = r"ID_\d+") -> str:
    """The group (patient) an image id belongs to: the first match of ``pattern``.

    >>> patient_of("ID_0036_Z_0060")
    'ID_0036'

    Raises
    ------
    ValueError
        If the id does not match.
    """
    found = re.search(pattern, image_id)
    if not found:
        raise ValueError(f"{image_id}: no patient id matching {pattern!r} in the name")
    return found.group(0)


def make_split(
    ids: Sequence[str],
    fraction: float = 0.15,
    seed: int = 2018,
    group_pattern: str | None = None,
) -> list[str]:
    """Choose validation ids at random (seeded), whole groups at a time where asked.

    With ``group_pattern`` (e.g. ``r"ID_\\d+"`` for a patient) every image of a group goes
    to the same side, so no patient is in both training and validation; groups are drawn
    until ``fraction`` of the images is reached. At least one image (or group) is chosen,
    and at least one left for training.

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1), there are fewer than two images (or groups), or
        an id does not match ``group_pattern``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction!r}")
    ids = sorted(ids)
    groups = Counter(patient_of(i, group_pattern) if group_pattern else i for i in ids)
    if len(groups) < 2:
        raise ValueError(f"cannot split {len(ids)} image(s) in {len(groups)} group(s)")
    order = np.random.default_rng(seed).permutation(sorted(groups))
    chosen, count = set(), 0
    for group in order[:-1]:
        if count and count + groups[group] / 2 > fraction * len(ids):
            break
        chosen.add(group)
        count += groups[group]
    return [i for i in ids if (patient_of(i, group_pattern) if group_pattern else i) in chosen]


def validation_ids_for(
    dataset: Dataset, validation_ids: str | Path | None, fallback: Path, seed: int = 2018
) -> Path:
    """The validation id list to use for ``dataset``.

    ``validation_ids`` if given, else the dataset's committed split, else a seeded random
    split of 15 % written to ``fallback`` (beside the model) on first use and reused after.
    """
    if validation_ids is not None:
        return Path(validation_ids)
    if dataset.validation_ids is not None:
        return dataset.validation_ids
    if not fallback.is_file():
        ids = dataset.ids()
        warnings.warn(
            f"{dataset.root}: no validation split given; {fallback.name} holds a random 15 % "
            "(seeded) of the images, kept out of training",
            UserWarning,
            stacklevel=2,
        )
        data.save_ids(fallback, make_split(ids, seed=seed), header=f"validation of {dataset.root}")
    return fallback
