"""Full-resolution inference for images of any size: tiling with smooth blending, and TTA.

Images that fit in one tile are padded (by reflection) to a multiple of ``2**depth`` and
predicted in one pass. Larger images are cut into overlapping square tiles, predicted in
batches, and blended with weights that ramp down linearly across the overlap, so tile seams
do not show and the model's memory use depends on the tile size, not the image size.

Test-time augmentation (TTA) predicts the 8 flips and 90-degree rotations of the input,
undoes each transform on its prediction and averages them.
"""

import json
from pathlib import Path

import numpy as np

from unet_tf import files
from unet_tf.model import crop_to_shape, model_depth, pad_to_multiple
from unet_tf.postprocess import to_instances

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


def _predict_padded(model, image: np.ndarray, multiple: int, transforms) -> np.ndarray:
    """Average prediction over ``transforms`` of one image predicted in one pass."""
    total = None
    for transform in transforms:
        padded, shape = pad_to_multiple(dihedral(image, transform), multiple)
        prediction = crop_to_shape(_predict_batch(model, padded[None])[0], shape)
        prediction = inverse_dihedral(prediction, transform)
        total = prediction if total is None else total + prediction
    return total / len(transforms)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` that overlap by at least ``overlap`` pixels."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """``(tile, tile)`` weights: 1 in the middle, ramping linearly to near 0 over ``overlap``."""
    ramp = np.ones(tile, np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        ramp[:overlap] = edge
        ramp[-overlap:] = np.minimum(ramp[-overlap:], edge[::-1])
    return np.outer(ramp, ramp)


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


def predict_full(
    model,
    image: np.ndarray,
    tile_size: int = 512,
    overlap: int | None = None,
    tta: bool = False,
    batch_size: int = 4,
) -> np.ndarray:
    """Predict an image of any size at full resolution.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`unet_tf.model.get_model`.
    image : numpy.ndarray
        ``(height, width, channels)`` float32.
    tile_size : int
        Side of the square tiles; a multiple of ``2**depth``. Images whose padded size fits
        in one tile are predicted whole.
    overlap : int, optional
        Pixels shared by neighbouring tiles, blended smoothly; by default an eighth of the
        tile (64 pixels for 512-pixel tiles).
    tta : bool
        Average over the 8 flips and rotations.
    batch_size : int
        Tiles (or transformed copies of a tile) per model call.

    Returns
    -------
    numpy.ndarray
        ``(height, width, num_classes)`` float32.

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
    transforms = DIHEDRAL if tta else (0,)
    height, width = image.shape[:2]
    if (
        -(-height // multiple) * multiple <= tile_size
        and -(-width // multiple) * multiple <= tile_size
    ):
        return _predict_padded(model, image, multiple, transforms).astype(np.float32)

    # Pad small sides up to one tile so every tile is a full square.
    padded, shape = image, (height, width)
    pad_height, pad_width = max(0, tile_size - height), max(0, tile_size - width)
    if pad_height or pad_width:
        mode = "reflect" if min(height, width) > 1 else "edge"
        padded = np.pad(image, [(0, pad_height), (0, pad_width), (0, 0)], mode=mode)
    window = blend_window(tile_size, overlap)[..., None]
    origins = [
        (top, left)
        for top in tile_starts(padded.shape[0], tile_size, overlap)
        for left in tile_starts(padded.shape[1], tile_size, overlap)
    ]
    total = weights = None
    # Each work item is one transformed tile; batches mix tiles and transforms freely.
    items = [(origin, transform) for origin in origins for transform in transforms]
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        batch = np.stack(
            [
                dihedral(padded[top : top + tile_size, left : left + tile_size], transform)
                for (top, left), transform in chunk
            ]
        )
        predictions = _predict_batch(model, batch)
        if total is None:
            total = np.zeros((*padded.shape[:2], predictions.shape[-1]), np.float32)
            weights = np.zeros((*padded.shape[:2], 1), np.float32)
        for ((top, left), transform), prediction in zip(chunk, predictions, strict=True):
            prediction = inverse_dihedral(prediction, transform) / len(transforms)
            total[top : top + tile_size, left : left + tile_size] += prediction * window
            weights[top : top + tile_size, left : left + tile_size] += window / len(transforms)
    return crop_to_shape(total / weights, shape)


# Used when a model has no tuned settings beside it: the method that needs only channel 0,
# at the threshold a sigmoid output is trained around.
FALLBACK_SETTINGS = {
    "postprocess": {"method": "components", "threshold": 0.5, "min_area": 15},
    "tta": False,
    "tile_size": 512,
}


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


def segment(
    model, image: np.ndarray, postprocess: dict, tta: bool = False, tile_size: int = 512
) -> np.ndarray:
    """Instance labels of an image of any size: :func:`predict_full`, then post-processing.

    ``postprocess`` holds ``method`` and the settings of
    :func:`unet_tf.postprocess.to_instances`, as stored by :func:`write_settings`.
    """
    settings = dict(postprocess)
    method = settings.pop("method")
    output = predict_full(model, image, tile_size=tile_size, tta=tta)
    return to_instances(output, method, **settings)
