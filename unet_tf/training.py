"""Training helpers shared by the notebooks: callbacks, atomic model saving, run records."""

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from unet_tf.files import atomic_path, set_usual_permissions, write_json


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that ends after ``minutes`` of training.

    Long runs on a CPU are bounded by wall time rather than by an epoch count; with
    ``EarlyStopping(restore_best_weights=True)`` the best epoch's weights are still kept.
    Whether the limit was hit is in ``stopped_by_time``.
    """

    def __init__(self, minutes: float, spent_minutes: float = 0.0):
        super().__init__()
        if minutes <= 0:
            raise ValueError(f"the time limit must be positive, got {minutes!r} minutes")
        self.minutes = minutes
        # A resumed run counts the minutes and epochs of the run it continues.
        self.spent_seconds = 60 * spent_minutes
        self.stopped_by_time = False
        self.started = None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = self.spent_seconds + time.monotonic() - self.started
        # Stop if another epoch of the mean length would run past the limit.
        per_epoch = elapsed / max(1, epoch + 1)
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


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the model whenever the monitored value improves, atomically.

    Keras' ``ModelCheckpoint`` writes the file in place, so a run killed while it saves
    leaves a torn file; this one writes a temporary file and renames it (see
    :func:`save_model`).
    """

    def __init__(self, path: str | Path, monitor: str = "val_loss"):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value):
            return
        if self.best is None or value < self.best:
            self.best = float(value)
            save_model(self.model, self.path)


# State that Keras callbacks keep between epochs and reset in on_train_begin; a resumed
# run puts it back after that reset.
_CALLBACK_STATE = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "ModelCheckpoint": ("best",),
    "BestModelCheckpoint": ("best",),
}


def _plain(value):
    """JSON-friendly copy of a callback attribute (numpy and tensor scalars to floats)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


class EpochCheckpoint(keras.callbacks.Callback):
    """Write a full, resumable checkpoint at the end of every epoch, atomically.

    A checkpoint is a folder ``epoch-NNNN`` inside ``directory`` holding the model weights,
    the optimizer's variables (step count, learning rate, moment estimates), the best weights
    kept by ``EarlyStopping``, and ``state.json``: the epochs completed, the history so far,
    the state of the other callbacks, the training minutes spent and the seed. The file
    ``latest`` names the newest complete checkpoint and is replaced atomically, so a run
    killed at any moment leaves the previous checkpoint or the new one, never a torn one.
    Older checkpoints are deleted once the new one is in place.

    Put it last in the callbacks list: on a resumed run its ``on_train_begin`` restores the
    state the other callbacks have just reset.
    """

    def __init__(self, directory: str | Path, callbacks=(), state=None, metadata=None):
        super().__init__()
        self.directory = Path(directory)
        self.tracked = list(callbacks)
        self.metadata = dict(metadata or {})
        self.resume_state = state
        self.history: dict[str, list] = {}
        self.previous_minutes = state["training_minutes"] if state else 0.0
        self.started = None
        # The 1-based epoch whose loss became NaN or infinite, or 0.
        self.diverged = 0

    @property
    def training_minutes(self) -> float:
        """Minutes of training so far, the interrupted runs this one continues included."""
        if self.started is None:
            return self.previous_minutes
        return self.previous_minutes + (time.monotonic() - self.started) / 60

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()
        if not self.resume_state:
            return
        self.history = {k: list(v) for k, v in self.resume_state["history"].items()}
        for callback in self.tracked:
            saved = self.resume_state["callbacks"].get(type(callback).__name__, {})
            for name, value in saved.items():
                setattr(callback, name, value)
            if isinstance(callback, keras.callbacks.EarlyStopping):
                best = self.directory / self.resume_state["checkpoint"] / "best_weights.npz"
                if best.is_file():
                    callback.best_weights = _load_arrays(best)

    def on_epoch_end(self, epoch, logs=None):
        logs = {key: float(value) for key, value in (logs or {}).items()}
        if not all(np.isfinite(value) for value in logs.values()):
            # Keep the last good checkpoint; TerminateOnNaN stops the run.
            self.diverged = epoch + 1
            self.model.stop_training = True
            return
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        minutes = self.training_minutes
        name = f"epoch-{epoch + 1:04d}"
        state = {
            "checkpoint": name,
            "epochs_completed": epoch + 1,
            "history": self.history,
            "callbacks": {
                type(callback).__name__: {
                    attribute: _plain(getattr(callback, attribute, None))
                    for attribute in _CALLBACK_STATE.get(type(callback).__name__, ())
                }
                for callback in self.tracked
            },
            "training_minutes": minutes,
            **self.metadata,
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.directory))
        try:
            _save_arrays(staging / "weights.npz", self.model.get_weights())
            _save_arrays(
                staging / "optimizer.npz", [v.numpy() for v in self.model.optimizer.variables]
            )
            for callback in self.tracked:
                best = getattr(callback, "best_weights", None)
                if isinstance(callback, keras.callbacks.EarlyStopping) and best is not None:
                    _save_arrays(staging / "best_weights.npz", best)
            write_json(staging / "state.json", state)
            final = self.directory / name
            if final.exists():
                shutil.rmtree(final)
            set_usual_permissions(staging)
            os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with atomic_path(self.directory / "latest") as partial:
            partial.write_text(name + "\n")
        for old in self.directory.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)


def _save_arrays(path: Path, arrays) -> None:
    np.savez(path, **{f"w{i}": np.asarray(array) for i, array in enumerate(arrays)})


def _load_arrays(path: Path) -> list[np.ndarray]:
    """The arrays written by :func:`_save_arrays`, in their order."""
    with np.load(path) as stored:
        return [stored[f"w{i}"] for i in range(len(stored))]


def latest_checkpoint(directory: str | Path) -> dict | None:
    """The state of the newest complete checkpoint in ``directory``, or None if there is none.

    Raises
    ------
    ValueError
        If ``latest`` names a checkpoint whose files are missing or unreadable.
    """
    directory = Path(directory)
    pointer = directory / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    state_file = directory / name / "state.json"
    try:
        return json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{state_file}: the last checkpoint cannot be read ({error}); delete {directory} "
            "to start training afresh"
        ) from error


def restore_checkpoint(model: keras.Model, directory: str | Path, state: dict) -> None:
    """Load a checkpoint's weights and optimizer variables into a compiled ``model``.

    The model must be built and compiled exactly as in the run that wrote the checkpoint.

    Raises
    ------
    ValueError
        If the checkpoint does not fit the model (other architecture or optimizer).
    """
    folder = Path(directory) / state["checkpoint"]
    weights = _load_arrays(folder / "weights.npz")
    optimizer_values = _load_arrays(folder / "optimizer.npz")
    try:
        model.set_weights(weights)
        model.optimizer.build(model.trainable_variables)
        variables = model.optimizer.variables
        if len(variables) != len(optimizer_values):
            raise ValueError(f"{len(optimizer_values)} optimizer values for {len(variables)}")
        for variable, value in zip(variables, optimizer_values, strict=True):
            variable.assign(value)
    except ValueError as error:
        raise ValueError(
            f"{folder}: the checkpoint does not fit this model ({error}); train with the same "
            f"parameters, or delete {Path(directory)} to start afresh"
        ) from error


def changed_parameters(
    previous: dict, current: dict, may_change: tuple[str, ...] = ("epochs", "max_minutes")
) -> dict:
    """Parameters that differ between a checkpointed run and this one: ``{name: (old, new)}``.

    ``may_change`` lists those a resumed run may change (a longer budget, say).
    """
    names = (set(previous) | set(current)) - set(may_change)
    return {
        name: (previous.get(name), current.get(name))
        for name in sorted(names)
        if previous.get(name) != current.get(name)
    }


def write_log(path: str | Path, history: dict[str, list]) -> None:
    """Write a history as ``CSVLogger`` does (an ``epoch`` column, then the sorted keys)."""
    import pandas as pd

    frame = pd.DataFrame({key: history[key] for key in sorted(history)})
    frame.insert(0, "epoch", range(len(frame)))
    with atomic_path(path) as partial:
        frame.to_csv(partial, index=False)


STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def get_strategy(name: str = "default", devices: list[str] | None = None):
    """A ``tf.distribute`` strategy by name.

    ``default``
        One device: the GPU if there is one, else the CPU.
    ``mirrored``
        Synchronous data parallelism over ``devices`` (default: every GPU of this machine;
        the CPU alone if there is none). The batch is split between the devices.
    ``multi_worker``
        Synchronous data parallelism over several machines. Each machine runs the same
        notebook with the ``TF_CONFIG`` environment variable describing the cluster and its
        own place in it, for example::

            TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                        "task": {"type": "worker", "index": 0}}'

    Raises
    ------
    ValueError
        If the name is unknown, or ``multi_worker`` is asked for without ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "multi_worker needs the TF_CONFIG environment variable on every machine "
                "(see unet_tf.training.get_strategy)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}; choose one of {STRATEGIES}")


def set_precision(name: str = "float32") -> None:
    """Set Keras' global dtype policy: ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.

    Mixed precision computes the convolutions in 16 bits and keeps the weights, the model's
    output head (see :func:`unet_tf.model.get_model`) and the losses in float32; it pays on
    GPUs with tensor cores (float16) or on TPUs and recent CPUs with bfloat16 units. Keras
    scales the float16 loss automatically to avoid underflow.

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; choose one of {PRECISIONS}")
    keras.mixed_precision.set_global_policy(name)
