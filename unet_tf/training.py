"""Training helpers shared by the notebooks: callbacks, atomic model saving, run records."""

import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

from unet_tf.files import atomic_path, write_json


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that ends after ``minutes`` of training.

    Long runs on a CPU are bounded by wall time rather than by an epoch count; with
    ``EarlyStopping(restore_best_weights=True)`` the best epoch's weights are still kept.
    Whether the limit was hit is in ``stopped_by_time``.
    """

    def __init__(self, minutes: float):
        super().__init__()
        if minutes <= 0:
            raise ValueError(f"the time limit must be positive, got {minutes!r} minutes")
        self.minutes = minutes
        self.stopped_by_time = False
        self.started = None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.monotonic() - self.started
        # Stop if another epoch of the mean length would run past the limit.
        per_epoch = elapsed / (epoch + 1)
        if elapsed + per_epoch > self.minutes * 60:
            self.stopped_by_time = True
            self.model.stop_training = True
            print(f"\nTime limit: stopping after epoch {epoch + 1} ({elapsed / 60:.1f} min).")


def save_model(model: keras.Model, path: str | Path) -> Path:
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


def environment() -> dict:
    """Versions and machine facts worth recording next to a trained model."""
    import pandas
    import skimage
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-image": skimage.__version__,
    }


def write_run_record(path: str | Path, parameters: dict, **results) -> None:
    """Write the parameters, results and environment of a training run as JSON."""
    write_json(path, {"parameters": parameters, "environment": environment(), **results})


def read_run_record(path: str | Path) -> dict:
    """Read a record written by :func:`write_run_record`.

    Raises
    ------
    FileNotFoundError
        If there is no record (train a model first with the training notebook).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training record; run notebooks/02-training first")
    return json.loads(path.read_text())
