"""A trained model on disk: the ``.keras`` file, its run record and its tuned settings.

Training writes them (:mod:`unet_tf.training`, :mod:`unet_tf.evaluation`); everything that
serves a model (``predict``, ``export``, the viewer, the submission, the benchmarks) reads
them here, without the training code.
"""

import json
import os
from pathlib import Path

from unet_tf import postprocess
from unet_tf.files import atomic_path


def save_model(model, path: str | Path) -> Path:
    """Save a model in the ``.keras`` format atomically (temporary file, then rename)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: the model file must end in .keras")
    with atomic_path(path) as partial:
        staged = partial.with_suffix(".keras")
        try:
            model.save(staged)
            os.replace(staged, partial)
        finally:
            staged.unlink(missing_ok=True)
    return path


def load_model(path: str | Path):
    """Load a trained ``.keras`` model for inference (not compiled).

    Raises
    ------
    FileNotFoundError
        If there is no such file; the message says how to train one.
    ValueError
        If the file is not a Keras model (a torn copy, another format).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model; train one with `make report`")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        # Keras reports a bad file from deep inside its zip and JSON readers.
        raise ValueError(
            f"{path}: not a Keras model file ({type(error).__name__}: {error})"
        ) from None


def read_run_record(path: str | Path) -> dict:
    """Read a record written by :func:`write_run_record`.

    Raises
    ------
    FileNotFoundError
        If there is no record (train a model first with the training notebook).
    ValueError
        If the file is not valid JSON or not a training record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training record; run notebooks/02-training first")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: the training record cannot be read ({error})") from error
    if not isinstance(record, dict) or not isinstance(record.get("parameters"), dict):
        raise ValueError(f"{path}: not a training record (no 'parameters' object)")
    return record


def load_model_and_settings(model_path: Path) -> tuple[object, dict, bool]:
    """The Keras model and its tuned inference settings (fallbacks if it has none).

    Returns the model, the settings and whether the settings were tuned.

    Raises
    ------
    FileNotFoundError
        If the model file does not exist; the message says how to train one.
    ValueError
        If the file is not a Keras model.
    """
    from unet_tf import datasets, inference

    net = load_model(model_path)
    record_path = Path(model_path).with_suffix(".json")
    record = read_run_record(record_path) if record_path.is_file() else {}
    parameters = record.get("parameters", {})
    # A model trained through an intensity window (CT), or on images resampled by
    # input_scale, reads new images the same way.
    window = datasets.recorded_window(parameters)
    as_trained = {"input_scale": parameters.get("input_scale", 1.0)}
    if window:
        as_trained["window"] = list(window)
    try:
        return net, {**inference.read_settings(model_path), **as_trained}, True
    except FileNotFoundError:
        settings = {**inference.FALLBACK_SETTINGS, **as_trained}
        # Untuned, the training record still tells the nucleus size to rescale images to.
        if record:
            diameter = record.get("nucleus_diameter")
            settings.update(rescale=bool(diameter), nucleus_diameter=diameter)
        method = postprocess.separation_method(net.output_shape[-1])
        if method:
            # The untuned defaults of the watershed on the model's own separation channel.
            settings["postprocess"] = {"method": method, "min_area": postprocess.MIN_AREA}
        return net, settings, False
