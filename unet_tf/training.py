"""Training: the run itself (:class:`TrainingConfig`, :func:`train`) and its parts.

:func:`train` is what ``02-training``, ``python -m unet_tf train``, the Kaggle kernel and
the benchmarks call. Its parts are here too: the wall-time limit, resumable per-epoch
checkpoints, the NaN stop, distribution strategies, mixed precision, atomic model saving
and run records.
"""

import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import keras
import numpy as np

from unet_tf.appearance import REPRESENTATIONS
from unet_tf.datasets import TASKS
from unet_tf.files import atomic_path, set_usual_permissions, write_json
from unet_tf.trained import load_model, read_run_record, save_model


class BudgetClock(keras.callbacks.Callback):
    """The training time a callback measures its budget with: the seconds since training
    began, plus ``spent_minutes`` of the interrupted runs a resumed run continues."""

    def __init__(self, spent_minutes: float = 0.0):
        super().__init__()
        self.spent_seconds = 60 * spent_minutes
        self.started = None

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def elapsed_seconds(self) -> float:
        """Seconds of training so far, those of the runs this one continues included
        (before training begins, only theirs)."""
        if self.started is None:
            return self.spent_seconds
        return self.spent_seconds + time.monotonic() - self.started


class TimeLimit(BudgetClock):
    """Stop training at the end of the first epoch that ends after ``minutes`` of training.

    Long runs on a CPU are bounded by wall time rather than by an epoch count; with
    ``EarlyStopping(restore_best_weights=True)`` the best epoch's weights are still kept.
    Whether the limit was hit is in ``stopped_by_time``.
    """

    def __init__(self, minutes: float, spent_minutes: float = 0.0):
        # A resumed run counts the minutes and epochs of the run it continues.
        super().__init__(spent_minutes)
        if minutes <= 0:
            raise ValueError(f"the time limit must be positive, got {minutes!r} minutes")
        self.minutes = minutes
        self.stopped_by_time = False

    def on_epoch_end(self, epoch, logs=None):
        elapsed = self.elapsed_seconds()
        # Stop if another epoch of the mean length would run past the limit.
        per_epoch = elapsed / max(1, epoch + 1)
        if elapsed + per_epoch > self.minutes * 60:
            self.stopped_by_time = True
            self.model.stop_training = True
            print(f"\nTime limit: stopping after epoch {epoch + 1} ({elapsed / 60:.1f} min).")


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


class WeightAverage(BudgetClock):
    """Average the weights of the epochs that end in the last ``tail`` of the budget.

    Stochastic weight averaging (Izmailov et al., 2018) over the tail of the learning-rate
    schedule: the mean of the weights the optimizer visits late in training can lie in a
    flatter part of the loss than any one of them. The budget is ``minutes`` of training or
    ``epochs``, whichever is further along (a resumed run counts what it continues, as
    :class:`TimeLimit` does). The batch-normalisation statistics are averaged with the
    weights. :meth:`apply` puts the mean into the model at the end.
    """

    def __init__(self, tail: float, minutes: float, epochs: int, spent_minutes: float = 0.0):
        super().__init__(spent_minutes)
        if not 0.0 < tail <= 1.0 or minutes <= 0 or epochs < 1:
            raise ValueError(
                f"the averaged tail must be in (0, 1] of a positive budget, got {tail!r} of "
                f"{minutes!r} minutes and {epochs!r} epochs"
            )
        self.tail, self.minutes, self.epochs = tail, minutes, epochs
        # The number of epochs averaged so far and their mean (float64, so that a long tail
        # does not lose precision); a resumed run restores both.
        self.count = 0
        self.mean: list[np.ndarray] | None = None

    def fraction(self, epochs_done: int) -> float:
        """The fraction of the budget spent when ``epochs_done`` epochs are complete."""
        return max(self.elapsed_seconds() / (60 * self.minutes), epochs_done / self.epochs)

    def on_epoch_end(self, epoch, logs=None):
        if self.fraction(epoch + 1) < 1.0 - self.tail:
            return
        weights = self.model.get_weights()
        self.count += 1
        if self.mean is None:
            self.mean = [np.asarray(w, np.float64) for w in weights]
            return
        for mean, weight in zip(self.mean, weights, strict=True):
            mean += (np.asarray(weight, np.float64) - mean) / self.count

    def apply(self) -> int:
        """Set the model's weights to the mean; return how many epochs it holds.

        A mean of fewer than two epochs is no average (and the weights ``EarlyStopping``
        restored may be better): then the model is left as it is and 0 is returned.
        Integer state (random seeds) keeps its last value.
        """
        if self.count < 2:
            return 0
        current = self.model.get_weights()
        self.model.set_weights(
            [
                mean.astype(weight.dtype) if np.issubdtype(weight.dtype, np.floating) else weight
                for mean, weight in zip(self.mean, current, strict=True)
            ]
        )
        return self.count


# State that Keras callbacks keep between epochs and reset in on_train_begin; a resumed
# run puts it back after that reset.
_CALLBACK_STATE = {
    "EarlyStopping": ("wait", "best", "best_epoch", "stopped_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "BestModelCheckpoint": ("best",),
    "WeightAverage": ("count",),
}


def _plain(value):
    """JSON-friendly copy of a callback attribute (numpy and tensor scalars to floats)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return float(value)


class EpochCheckpoint(BudgetClock):
    """Write a full, resumable checkpoint at the end of every epoch, atomically.

    A checkpoint is a folder ``epoch-NNNN`` inside ``directory`` holding the model weights,
    the optimizer's variables (step count, learning rate, moment estimates), the best weights
    kept by ``EarlyStopping``, the running mean of :class:`WeightAverage`, and
    ``state.json``: the epochs completed, the history so far, the state of the other
    callbacks, the training minutes spent and the seed. The file
    ``latest`` names the newest complete checkpoint and is replaced atomically, so a run
    killed at any moment leaves the previous checkpoint or the new one, never a torn one.
    Older checkpoints are deleted once the new one is in place.

    Put it last in the callbacks list: on a resumed run its ``on_train_begin`` restores the
    state the other callbacks have just reset.
    """

    def __init__(self, directory: str | Path, callbacks=(), state=None, metadata=None):
        super().__init__(state["training_minutes"] if state else 0.0)
        self.directory = Path(directory)
        self.tracked = list(callbacks)
        self.metadata = dict(metadata or {})
        self.resume_state = state
        self.history: dict[str, list] = {}
        # The 1-based epoch whose loss became NaN or infinite, or 0.
        self.diverged = 0

    @property
    def training_minutes(self) -> float:
        """Minutes of training so far, the interrupted runs this one continues included."""
        return self.elapsed_seconds() / 60

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
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
            if isinstance(callback, WeightAverage):
                mean = self.directory / self.resume_state["checkpoint"] / "weight_mean.npz"
                callback.mean = _load_arrays(mean) if mean.is_file() else None

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
                if isinstance(callback, WeightAverage) and callback.mean is not None:
                    _save_arrays(staging / "weight_mean.npz", callback.mean)
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
# TrainingConfig.precision also takes "auto": the faster of these on the machine at hand.
CONFIG_PRECISIONS = ("auto", *PRECISIONS)


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


def has_bfloat16_units(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this machine's CPU multiplies bfloat16 matrices in hardware (Intel AMX) and
    no GPU is there to train on instead."""
    import tensorflow as tf

    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False
    return "amx_bf16" in flags.split() and not tf.config.list_physical_devices("GPU")


def resolve_speed(config: "TrainingConfig", bfloat16_units: bool | None = None) -> tuple[str, bool]:
    """The precision and XLA setting a run of ``config`` trains with.

    ``precision="auto"`` picks what trains fastest here, measured crops per second of the
    default recipe: on CPUs with AMX bfloat16 units, ``mixed_bfloat16`` without XLA (5.8
    crops/s, against 2.7 with float32 and XLA, 3.9 with float32 alone and 3.0 with bfloat16
    under XLA, whose CPU kernels do not use the units); elsewhere float32 with
    ``jit_compile`` as asked (on an AMD EPYC, 4.2 crops/s with XLA against 3.0 without, and
    bfloat16 no faster). Any other precision is taken as given.
    """
    if config.precision != "auto":
        return config.precision, config.jit_compile
    if has_bfloat16_units() if bfloat16_units is None else bfloat16_units:
        return "mixed_bfloat16", False
    return "float32", config.jit_compile


def float32_copy(net: keras.Model, config: "TrainingConfig") -> keras.Model:
    """``net`` rebuilt with float32 computations and the same weights (mixed precision keeps
    its weights in float32): a model trained in 16 bits is saved as one that runs anywhere,
    exports to ONNX and computes its outputs as a float32-trained model does."""
    set_precision("float32")
    copy = build_model(replace(config, precision="float32"))
    copy.set_weights(net.get_weights())
    # The learning rate the schedule ended at goes with it; the optimizer's moments do not
    # (a resumed run reads them from its own checkpoint).
    copy.optimizer.learning_rate.assign(float(net.optimizer.learning_rate.numpy()))
    return copy


# --- the training run ------------------------------------------------------------------

# A resumed run may extend its budget; any other change would mix two recipes in one model.
RESUMABLE = ("epochs", "max_minutes")
SCHEDULES = ("plateau", "cosine")
BALANCE_LEVELS = ("source", "type")
DEFORMATIONS = ("none", "affine", "elastic", "affine+elastic")


@dataclass(frozen=True)
class TrainingConfig:
    """Every parameter of a training run, checked when made, recorded whole with the model.

    The defaults are the recipe of ``make report``; ``notebooks/02-training.ipynb`` declares
    the same names and defaults in its parameters cell (a test keeps the two alike), and
    ``python -m unet_tf train`` has one option per field.

    Attributes
    ----------
    epochs : int
        Upper bound on epochs; early stopping or the time budget usually ends training first.
    max_minutes : float
        Wall-time budget for training, checked at the end of each epoch.
    steps_per_epoch, batch_size : int
        Batches per epoch and crops per batch.
    crop_size : int
        Side of the square training crops at native resolution; a multiple of ``2**depth``.
    target : str
        Training targets: ``"binary"`` (nucleus), ``"border"`` (nucleus + borders) or
        ``"center"`` (nucleus + borders + normalised distance to the nucleus edge).
    loss : str
        ``"bce"``, ``"dice"``, ``"bce_dice"`` or ``"focal"``.
    contact_weight : float
        Extra loss weight where two nuclei are within 3 pixels; 0 disables.
    depth, base_filters : int
        Downsamplings of the U-Net and filters of its first level.
    dropout_rate : float
        Dropout inside each convolution block.
    learning_rate : float
        Peak Adam learning rate (see ``schedule``).
    patience : int
        Epochs without validation improvement before stopping.
    deformation : str
        Random deformation of training crops: ``"none"``, ``"affine"`` (rotation by any
        angle, scaling, shear), ``"elastic"`` or ``"affine+elastic"``.
    max_images : int
        Images of each split to use; 0 means all.
    seed : int
        Seed of the weights, the crop order and the augmentation.
    model_name : str
        Files are ``<models>/<model_name>.keras``, ``.json`` and ``.log.csv``.
    distribution : str
        ``"default"`` (one device), ``"mirrored"`` (all GPUs) or ``"multi_worker"``.
    precision : str
        ``"auto"`` (what trains fastest here, see :func:`resolve_speed`), ``"float32"``,
        ``"mixed_float16"`` or ``"mixed_bfloat16"``. The saved model computes in float32
        whatever the training precision.
    jit_compile : bool
        Compile training steps with XLA (``precision="auto"`` turns it off where it picks
        bfloat16).
    representation : str
        Model input: ``"rgb"`` (the images as read) or ``"nuclei_bright"`` (one channel,
        normalised, nuclei always bright; see :mod:`unet_tf.appearance`).
    max_scale : float
        Random zoom of training crops in ``[1 / max_scale, max_scale]``; 1 disables.
    colour_augmentation : float
        Strength, 0 (off) to 1, of the changes of look: Gaussian blur up to ``strength``
        pixels and noise up to ``0.03 * strength`` on half the crops, and random weights of
        the colour channels in the ``nuclei_bright`` gray value.
    tissue_augmentation : float
        Brightness, 0 (off) to 1, of the random textured background laid behind half the
        crops (``Augmentation.tissue``): fluorescence crops are made to look like stained
        tissue or brightfield cytoplasm, which ``nuclei_bright`` shows as a fibrous mid-gray.
    resolution_augmentation : float
        Strength, 0 (off) to 1, of the lower resolution given to half the crops
        (``Augmentation.low_resolution``): shrunk by up to ``1 + 3 * strength`` and enlarged
        back, as low-magnification images are when the automatic rescaling enlarges them.
    balance : float
        Draw images of rare sources (imaging type and size) more often: 0 draws every image
        equally often, 1 every source.
    balance_by : str
        ``"source"``: balance the sources (imaging type and size) against each other;
        ``"type"``: balance the imaging types first and, within each, its sources, so that
        the one stained source is not outweighed by the many fluorescence ones.
    schedule : str
        ``"plateau"`` (halve the learning rate when the validation loss stalls) or
        ``"cosine"`` (warm-up, then cosine decay planned to end with the time budget).
    weight_averaging : float
        Save the mean of the weights of the epochs that end in this last fraction of the
        budget instead of the last epoch's (stochastic weight averaging, see
        :class:`WeightAverage`); 0 off, up to 1.
    dataset : str
        What to train on: ``"dsb2018"``, ``"lung_ct"`` or a folder with ``images/`` and
        ``masks/`` (see :mod:`unet_tf.datasets`).
    task : str
        ``"instances"`` (nuclei, scored with the DSB metric) or ``"semantic"`` (one class,
        binary masks, target ``"binary"``; scored with Dice, IoU and Hausdorff distance).
    window_min, window_max : float
        Intensity window of the images (CT), mapped to [0, 1]; both 0: no window.
    init_model : str
        A trained ``.keras`` model to start from (fine-tuning); empty: random weights.
    input_scale : float
        Resample every image (and its labels) by this factor before training, and new
        images by the same factor at inference: 0.5 halves the sides, so that a 256-pixel
        crop holds a whole 512-pixel CT slice and the network sees twice the context.
    normalised_diameter : float
        Size normalisation: resample each training and validation image so that the median
        inscribed diameter of its nuclei becomes this many pixels, as the automatic
        rescaling does to new images (:func:`unet_tf.inference.rescale_factor`); the random
        zoom (``max_scale``) then varies it around that size, and inference rescales new
        images to it. 0 trains on the images' own sizes. Instances only.

    Raises
    ------
    ValueError
        From ``__post_init__``, naming the parameter, when a value is out of range or unknown.
    """

    epochs: int = 200
    max_minutes: float = 42.0
    steps_per_epoch: int = 50
    batch_size: int = 8
    crop_size: int = 256
    target: str = "border"
    loss: str = "bce_dice"
    contact_weight: float = 0.0
    depth: int = 4
    base_filters: int = 16
    dropout_rate: float = 0.0
    learning_rate: float = 0.001
    patience: int = 12
    deformation: str = "none"
    max_images: int = 0
    seed: int = 2018
    model_name: str = "unet"
    distribution: str = "default"
    precision: str = "auto"
    jit_compile: bool = True
    representation: str = "nuclei_bright"
    max_scale: float = 2.0
    colour_augmentation: float = 1.0
    tissue_augmentation: float = 1.0
    resolution_augmentation: float = 0.0
    balance: float = 0.5
    balance_by: str = "source"
    schedule: str = "cosine"
    weight_averaging: float = 0.0
    dataset: str = "dsb2018"
    task: str = "instances"
    window_min: float = 0.0
    window_max: float = 0.0
    init_model: str = ""
    input_scale: float = 1.0
    normalised_diameter: float = 0.0

    def __post_init__(self):
        for item in fields(self):
            value = getattr(self, item.name)
            wanted = (int, float) if item.type is float else item.type
            # bool is an int in Python; a flag given as a count (or the reverse) is a mistake.
            wrong_bool = isinstance(value, bool) != (item.type is bool)
            if not isinstance(value, wanted) or wrong_bool:
                raise ValueError(f"{item.name} must be {item.type.__name__}, got {value!r}")
        positive = ("epochs", "steps_per_epoch", "batch_size", "patience", "max_minutes")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 1 <= self.depth <= 7 or self.base_filters < 1:
            raise ValueError(
                f"depth must be 1 to 7 and base_filters at least 1, got {self.depth} "
                f"and {self.base_filters}"
            )
        if self.crop_size < 1 or self.crop_size % 2**self.depth:
            raise ValueError(
                f"crop_size {self.crop_size} must be a positive multiple of "
                f"2**depth = {2**self.depth}"
            )
        if self.contact_weight < 0:
            raise ValueError(
                f"contact_weight must be 0 (off) or positive, got {self.contact_weight}"
            )
        if self.max_images < 0:
            raise ValueError(f"max_images must be 0 (all) or positive, got {self.max_images}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not self.model_name or "/" in self.model_name or self.model_name.startswith("."):
            raise ValueError(f"model_name must be a plain file name stem, got {self.model_name!r}")
        from unet_tf import losses, pipeline

        losses.get_loss(self.loss)
        pipeline.target_channels(self.target)
        if not 0.0 <= self.balance <= 1.0:
            raise ValueError(f"balance must be in [0, 1], got {self.balance}")
        names = (
            "colour_augmentation",
            "tissue_augmentation",
            "resolution_augmentation",
            "weight_averaging",
        )
        for name in names:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        self.augmentation()  # Checks max_scale.
        if not 0.125 <= self.input_scale <= 4.0:
            raise ValueError(f"input_scale must be in [0.125, 4], got {self.input_scale}")
        if self.normalised_diameter and not (
            4.0 <= self.normalised_diameter <= 128.0 and self.task == "instances"
        ):
            raise ValueError(
                f"normalised_diameter must be 0 (off) or 4 to 128 pixels, for task "
                f"'instances'; got {self.normalised_diameter} for task {self.task!r}"
            )
        if (self.window_min or self.window_max) and not self.window_max > self.window_min:
            raise ValueError(
                f"the intensity window needs window_min < window_max, got "
                f"{self.window_min}..{self.window_max}"
            )
        if self.task == "semantic" and (self.target != "binary" or self.contact_weight):
            raise ValueError(
                "task 'semantic' (one class) trains on target 'binary' without contact_weight"
            )
        known_names = (
            ("task", TASKS),
            ("distribution", STRATEGIES),
            ("precision", CONFIG_PRECISIONS),
            ("representation", REPRESENTATIONS),
            ("schedule", SCHEDULES),
            ("balance_by", BALANCE_LEVELS),
            ("deformation", DEFORMATIONS),
        )
        for name, known in known_names:
            if getattr(self, name) not in known:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {known}")

    @classmethod
    def from_mapping(cls, values, strict: bool = True) -> "TrainingConfig":
        """A config from the fields found in ``values`` (a notebook's ``globals()``, say).

        With ``strict`` every field must be there, so a notebook's parameters cell cannot
        drift from this class unnoticed; other names in ``values`` are ignored.
        """
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in values]
        if strict and missing:
            raise ValueError(f"training parameters missing: {missing}")
        return cls(**{name: values[name] for name in names if name in values})

    def window(self) -> tuple[float, float] | None:
        """The intensity window ``(window_min, window_max)``, or None for none."""
        from unet_tf import datasets

        return datasets.recorded_window(asdict(self))

    def augmentation(self):
        """The :class:`unet_tf.pipeline.Augmentation` of this config."""
        from unet_tf import pipeline

        return pipeline.Augmentation(
            affine="affine" in self.deformation,
            elastic="elastic" in self.deformation,
            max_scale=self.max_scale,
            blur=1.0 * self.colour_augmentation,
            noise=0.03 * self.colour_augmentation,
            channel_weights=self.colour_augmentation > 0,
            tissue=0.6 * self.tissue_augmentation,
            low_resolution=1.0 + 3.0 * self.resolution_augmentation,
        )

    def paths(self, models_dir: str | Path) -> dict[str, Path]:
        """The files of this run in ``models_dir``: model, record, log, best model, resume."""
        folder, stem = Path(models_dir), self.model_name
        return {
            "model": folder / f"{stem}.keras",
            "record": folder / f"{stem}.json",
            "log": folder / f"{stem}.log.csv",
            "best": folder / f"{stem}.best.keras",
            "resume": folder / f"{stem}.resume",
            # Written only for a dataset without a validation split of its own.
            "validation_ids": folder / f"{stem}.validation_ids.txt",
        }


# What a run did before a parameter existed, where that differs from today's default: a
# record without the parameter stands for this value.
BEFORE_PARAMETER = {"tissue_augmentation": 0.0}
# Parameters removed from TrainingConfig, each with its value that left it off: a run
# recorded with that value did what this version does, and its record stands for the
# same config without the parameter. With another value it did what no config of this
# version does (see :func:`unknown_parameters`).
REMOVED_PARAMETERS = {"stain_augmentation": 0.0}


def recorded_parameters(parameters: dict) -> dict:
    """The training parameters of a run record or checkpoint, complete: a parameter added
    to :class:`TrainingConfig` after the run was recorded gets the value that reproduces
    what the run did (:data:`BEFORE_PARAMETER`, else its default), and a removed parameter
    that was off (:data:`REMOVED_PARAMETERS`) is dropped. Other names this version does
    not know are kept, so that such a record matches no config."""
    defaults = {item.name: item.default for item in fields(TrainingConfig)}
    kept = {
        name: value
        for name, value in parameters.items()
        if not (name in REMOVED_PARAMETERS and value == REMOVED_PARAMETERS[name])
    }
    return {**defaults, **BEFORE_PARAMETER, **kept}


def unknown_parameters(parameters: dict) -> dict:
    """The parameters of a run record or checkpoint that this version does not have, after
    :func:`recorded_parameters`: a removed parameter that was on, or a name from a newer
    version. A run with any of them did what no :class:`TrainingConfig` does."""
    known = {item.name for item in fields(TrainingConfig)}
    return {k: v for k, v in recorded_parameters(parameters).items() if k not in known}


def finished_run(
    config: TrainingConfig, models_dir: str | Path, exclude_ids: Sequence[str] = ()
) -> tuple[keras.Model, dict] | None:
    """The model and record a finished :func:`train` run of exactly ``config`` (and
    ``exclude_ids``) left in ``models_dir``, or None where there is none.

    Benchmarks use it to score again without training again; a record of other parameters
    or other excluded images does not count.
    """
    paths = config.paths(models_dir)
    if not (paths["model"].is_file() and paths["record"].is_file()):
        return None
    record = read_run_record(paths["record"])
    if recorded_parameters(record["parameters"]) != asdict(config):
        return None
    if sorted(record.get("excluded_ids", [])) != sorted(exclude_ids):
        return None
    return load_model(paths["model"]), record


def train_or_reuse(
    config: TrainingConfig, models_dir: str | Path, reuse: bool = False, **train_arguments
) -> tuple[keras.Model, dict]:
    """The model and record of a run of ``config``: with ``reuse`` those a finished run of
    exactly this config (and ``exclude_ids``) left (see :func:`finished_run`), else freshly
    trained with :func:`train` (``resume=False``) and ``train_arguments``."""
    exclude_ids = train_arguments.get("exclude_ids", ())
    found = finished_run(config, models_dir, exclude_ids) if reuse else None
    if found is None:
        result = train(config, models_dir=models_dir, resume=False, **train_arguments)
        found = result.model, read_run_record(result.paths["record"])
    return found


@dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : keras.Model
        The trained model with the best epoch's weights.
    history : pandas.DataFrame
        One row per epoch (the resumed ones included): losses and pixel metrics.
    best_epoch : int
        1-based epoch of the lowest validation loss.
    training_minutes : float
        Minutes of training, interrupted runs included.
    stopped_by_time : bool
        Whether the time budget ended the run.
    resumed_after : int
        Epochs completed by an interrupted run this one continued (0: a fresh run).
    train_images, validation_images : int
        Images in each split.
    paths : dict
        The files written (see :meth:`TrainingConfig.paths`).
    """

    model: keras.Model
    history: object
    best_epoch: int
    training_minutes: float
    stopped_by_time: bool
    resumed_after: int
    train_images: int
    validation_images: int
    paths: dict = field(default_factory=dict)

    @property
    def epochs_trained(self) -> int:
        """Epochs completed in all."""
        return len(self.history)


def compile_model(net: keras.Model, config: TrainingConfig) -> keras.Model:
    """Compile ``net`` as :func:`train` does: Adam, the configured loss, pixel IoU and Dice."""
    from unet_tf import keras_metrics, losses

    net.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=losses.get_loss(config.loss, pixel_weights=config.contact_weight > 0),
        metrics=[keras_metrics.PixelIoU(channel=0), keras_metrics.PixelDice(channel=0)],
        jit_compile=config.jit_compile,
    )
    return net


def build_model(config: TrainingConfig) -> keras.Model:
    """The U-Net of ``config``, compiled (:func:`compile_model`); call in a strategy's scope.

    Its input channels follow the representation: 3 for ``rgb``, 1 for ``nuclei_bright``.
    """
    from unet_tf import appearance, model, pipeline

    net = model.get_model(
        input_channels=appearance.input_channels(config.representation),
        num_classes=pipeline.target_channels(config.target),
        depth=config.depth,
        base_filters=config.base_filters,
        dropout_rate=config.dropout_rate,
        name=config.model_name,
    )
    return compile_model(net, config)


class BudgetSchedule(BudgetClock):
    """Learning rate planned on the budget: warm-up, then cosine decay to its end.

    A CPU run is bounded by minutes rather than epochs, so the schedule follows the fraction
    of the budget spent: of the wall time, or of ``steps`` where a run is bounded by its
    number of steps too, whichever is further along. A linear warm-up over the first
    ``warmup`` of it from a tenth of the rate, then a cosine down to ``final`` times the
    rate when the budget ends. The rate is set before every batch; a resumed run counts the
    minutes and steps of the run it continues.
    """

    def __init__(
        self,
        learning_rate: float,
        minutes: float,
        spent_minutes: float = 0.0,
        warmup: float = 0.03,
        final: float = 0.01,
        steps: int | None = None,
        spent_steps: int = 0,
    ):
        super().__init__(spent_minutes)
        if minutes <= 0 or learning_rate <= 0 or (steps is not None and steps <= 0):
            raise ValueError("the budget and the learning rate must be positive")
        self.learning_rate, self.seconds = learning_rate, 60 * minutes
        self.warmup, self.final = warmup, final
        self.steps, self.step = steps, spent_steps

    def rate(self, fraction: float) -> float:
        """The learning rate when ``fraction`` of the budget is spent."""
        fraction = min(max(fraction, 0.0), 1.0)
        if fraction < self.warmup:
            return self.learning_rate * (0.1 + 0.9 * fraction / self.warmup)
        progress = (fraction - self.warmup) / (1.0 - self.warmup)
        cosine = 0.5 * (1.0 + np.cos(np.pi * progress))
        return self.learning_rate * (self.final + (1.0 - self.final) * cosine)

    def fraction(self) -> float:
        """The fraction of the budget spent so far."""
        elapsed = self.elapsed_seconds() / self.seconds
        return max(elapsed, self.step / self.steps) if self.steps else elapsed

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(self.fraction()))
        self.step += 1


def training_callbacks(
    config: TrainingConfig, best_path: Path, spent_minutes: float = 0.0, spent_epochs: int = 0
) -> list[keras.callbacks.Callback]:
    """Early stopping (best weights restored), best-model checkpoint, the schedule, and the
    weight average where ``config.weight_averaging`` asks for one."""
    if config.schedule == "cosine":
        schedule = BudgetSchedule(
            config.learning_rate,
            config.max_minutes,
            spent_minutes,
            steps=config.epochs * config.steps_per_epoch,
            spent_steps=spent_epochs * config.steps_per_epoch,
        )
    else:
        schedule = keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(2, config.patience // 3), min_lr=1e-5
        )
    tracked = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
        BestModelCheckpoint(best_path),
        schedule,
    ]
    if config.weight_averaging:
        tracked.append(
            WeightAverage(config.weight_averaging, config.max_minutes, config.epochs, spent_minutes)
        )
    return tracked


def _resume_state(config: TrainingConfig, resume_dir: Path, resume: bool) -> dict | None:
    """The checkpoint to continue from, after checking that it was made with ``config``."""
    state = latest_checkpoint(resume_dir) if resume else None
    if state:
        # A checkpoint made before a parameter existed (or after one was removed) is read
        # as what that run did.
        recorded = recorded_parameters(state.get("parameters", {}))
        unknown = unknown_parameters(state.get("parameters", {}))
        if unknown:
            raise ValueError(
                f"{resume_dir} holds an interrupted run with parameters this version does not "
                f"have ({unknown}), which it cannot resume; delete it (or pass resume=False, "
                "--no-resume) to start afresh"
            )
        changed = changed_parameters(recorded, asdict(config), RESUMABLE)
        if changed:
            raise ValueError(
                f"{resume_dir} holds an interrupted run with other parameters ({changed}); "
                "delete it (or pass resume=False, --no-resume) to start afresh, or give the same "
                "parameters to resume"
            )
    elif resume_dir.exists():
        shutil.rmtree(resume_dir)
    return state


def initialise_from(net: keras.Model, config: TrainingConfig) -> None:
    """Start ``net`` from the weights of ``config.init_model`` (fine-tuning).

    Raises
    ------
    FileNotFoundError
        If there is no such model.
    ValueError
        If its input or output channels do not fit the config (the message says which
        parameter to change), or its architecture differs (depth, filters).
    """
    from unet_tf import config as paths

    path = paths.resolve(config.init_model)
    source = load_model(path)
    record_path = path.with_suffix(".json")
    record = read_run_record(record_path)["parameters"] if record_path.is_file() else {}
    for what, mine, theirs, parameter in (
        ("input", net.input_shape[-1], source.input_shape[-1], "representation"),
        ("output", net.output_shape[-1], source.output_shape[-1], "target"),
    ):
        if mine != theirs:
            hint = f" (it was trained with {parameter}={record[parameter]!r})" if record else ""
            raise ValueError(
                f"{path}: the model has {theirs} {what} channel(s), this training {mine}; set "
                f"{parameter} as the model was trained{hint}"
            )
    try:
        net.set_weights(source.get_weights())
    except ValueError as error:
        trained = {k: record[k] for k in ("depth", "base_filters") if k in record}
        raise ValueError(
            f"{path}: another architecture than depth={config.depth}, base_filters="
            f"{config.base_filters}"
            + (f" (it was trained with {trained})" if trained else "")
            + f"; set them as the model was trained ({error})"
        ) from error


def _pack(samples: list):
    from unet_tf import pipeline

    return pipeline.pack_samples([s[1] for s in samples], [s[2] for s in samples])


def _sources(samples: list) -> list[str]:
    """The source of each sample: an imaging type and an image size (``stained 512x640``),
    in DSB2018 one microscope, stain and magnification. Balanced sampling draws rare
    sources more often."""
    from unet_tf import data

    return [
        f"{data.imaging_type(image)} {image.shape[1]}x{image.shape[0]}" for _, image, _ in samples
    ]


def sampling_weights(sources: list[str], config: TrainingConfig) -> np.ndarray:
    """How often balanced sampling draws each training image, from the images' sources
    (``"stained 320x256"``, see :func:`_sources`) and ``config.balance`` and
    ``config.balance_by`` (:func:`unet_tf.pipeline.balanced_weights`)."""
    from unet_tf import pipeline

    # A source's imaging type is its first word.
    groups = [source.split()[0] for source in sources] if config.balance_by == "type" else None
    return pipeline.balanced_weights(sources, config.balance, groups)


def _median_diameter(samples: list) -> float | None:
    """The median nucleus size of labelled samples, measured as inference measures the
    nuclei of a new image (:func:`unet_tf.inference.inscribed_diameters`)."""
    from unet_tf import inference

    diameters = np.concatenate([inference.inscribed_diameters(labels) for *_, labels in samples])
    return round(float(np.median(diameters)), 2) if diameters.size else None


def fine_tune(
    base_model: str | Path,
    train_ids: Sequence[str],
    validation_ids: Sequence[str],
    models_dir: str | Path,
    model_name: str = "fine-tuned",
    data_dir: str | Path | None = None,
    **changes,
) -> TrainingResult:
    """Fine-tune a trained model on some images of a Kaggle-layout training set alone.

    The recipe is the base model's own (from its run record), started from its weights
    (``init_model``) and without balanced sampling (a few images of one kind have nothing
    to balance), with ``changes`` on top (``epochs``, ``max_minutes``, ``learning_rate``
    ...). Only ``train_ids`` are trained on; ``validation_ids`` are scored every epoch. The
    model is saved as ``<models_dir>/<model_name>.keras`` (see :func:`train`).

    Raises
    ------
    ValueError
        If there are no images to train or validate on, the two lists share an image,
        ``data_dir`` lacks one of them, or the base model was trained with a parameter this
        version does not have (:func:`unknown_parameters`).
    FileNotFoundError
        If the base model has no run record.
    """
    from unet_tf import config as paths
    from unet_tf import data

    base_model = Path(base_model)
    if not train_ids or not validation_ids:
        raise ValueError("fine-tuning needs images to train on and images to validate on")
    shared = sorted(set(train_ids) & set(validation_ids))
    if shared:
        raise ValueError(f"{len(shared)} image(s) are both trained and validated on: {shared[:3]}")
    data_dir = Path(data_dir or paths.TRAIN_DIR)
    everything = [folder.name for folder in data.list_sample_dirs(data_dir)]
    unknown = sorted((set(train_ids) | set(validation_ids)) - set(everything))
    if unknown:
        raise ValueError(f"{data_dir}: no image(s) {unknown[:3]} to fine-tune with")
    record = read_run_record(base_model.with_suffix(".json"))
    unrepeatable = unknown_parameters(record["parameters"])
    if unrepeatable:
        raise ValueError(
            f"{base_model} was trained with parameters this version does not have "
            f"({unrepeatable}); its recipe cannot be repeated"
        )
    # ``changes`` may set balance too: they come last.
    settings = {"balance": 0.0, **changes, "init_model": str(base_model), "model_name": model_name}
    recipe = replace(TrainingConfig(**recorded_parameters(record["parameters"])), **settings)
    kept = set(train_ids)
    with tempfile.TemporaryDirectory() as folder:
        ids_file = Path(folder) / "validation_ids.txt"
        data.save_ids(ids_file, sorted(validation_ids))
        return train(
            recipe,
            data_dir=data_dir,
            validation_ids=ids_file,
            models_dir=models_dir,
            resume=False,
            exclude_ids=[image_id for image_id in everything if image_id not in kept],
        )


def train(
    config: TrainingConfig,
    data_dir: str | Path | None = None,
    validation_ids: str | Path | None = None,
    models_dir: str | Path | None = None,
    resume: bool = True,
    verbose: int = 2,
    exclude_ids: Sequence[str] = (),
) -> TrainingResult:
    """Train the U-Net of ``config`` and save it with its record and log.

    Reads the training and validation images, builds and compiles the model (under the
    configured distribution strategy and precision), and fits it on random augmented crops,
    validating every epoch on tiles covering the validation images. Training ends at the
    first of ``epochs``, early stopping on the validation loss (best weights restored), or
    the ``max_minutes`` budget. A full checkpoint is written after every epoch, so a run
    that was killed continues from its last complete epoch when called again with the same
    config; the checkpoint is removed once the model is saved.

    Parameters
    ----------
    config : TrainingConfig
        Every parameter of the run.
    data_dir : path, optional
        Training images, in the Kaggle layout or a folder dataset; by default the dataset
        the config names.
    validation_ids : path, optional
        Id list of the validation images, none of which is trained on. By default the
        dataset's committed split (``data/splits/``), or for a folder of one's own a
        seeded random 15 %, written to ``<models>/<model_name>.validation_ids.txt``.
    models_dir : path, optional
        Where the model, ``<name>.json`` (the whole config, the environment and the
        results), ``<name>.log.csv`` and the checkpoints go (default ``models/``).
    resume : bool
        Continue an interrupted run of the same config; False starts afresh.
    verbose : int
        Keras' progress output: 0 silent, 1 a progress bar, 2 one line per epoch.
    exclude_ids : sequence of str
        Images of ``data_dir`` not to train on (a group held out to test generalization).

    Returns
    -------
    TrainingResult

    Raises
    ------
    ValueError
        If the checkpoint was made with other parameters, the crop is larger than every
        image, or the loss became NaN (the last good checkpoint is kept).
    FileNotFoundError
        If the data or the id list is missing.
    """
    import pandas as pd

    from unet_tf import config as paths
    from unet_tf import data, datasets, inference, pipeline

    models_dir = Path(models_dir or paths.MODELS_DIR)
    files = config.paths(models_dir)
    # Before anything global changes: a refused resume leaves the process as it found it.
    state = _resume_state(config, files["resume"], resume)
    strategy = get_strategy(config.distribution)
    precision, jit_compile = resolve_speed(config)
    set_precision(precision)
    models_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    dataset = datasets.open_dataset(data_dir or config.dataset, config.window(), config.task)
    initial_epoch = state["epochs_completed"] if state else 0

    validation_ids = datasets.validation_ids_for(
        dataset, validation_ids, files["validation_ids"], config.seed
    )
    train_ids, held_out = data.split_ids(dataset.ids(), validation_ids, dataset.root)
    excluded = set(exclude_ids)
    train_ids = [image_id for image_id in train_ids if image_id not in excluded]
    if config.max_images:
        train_ids, held_out = train_ids[: config.max_images], held_out[: config.max_images]
    training_set = inference.resample_samples(dataset.load(train_ids), config.input_scale)
    sources = _sources(training_set) if config.balance else None
    # One class (a lung, say) has no nucleus size to rescale new images to.
    diameter, zooms = None, None
    if config.task == "instances" and not config.normalised_diameter:
        diameter = _median_diameter(training_set)
    if config.normalised_diameter:
        # The training crops are resampled as they are cut; the validation images, scored
        # whole every epoch, once, as inference resamples new images.
        zooms = inference.size_factors(training_set, config.normalised_diameter)
        # The size the network trains at, by construction (images within the rescaling's
        # tolerance of it are left as they are): inference rescales new images to it.
        diameter = config.normalised_diameter
    train_samples = _pack(training_set)
    # The decoded float images take several times the memory of the packed ones.
    del training_set
    validation_set = inference.resample_samples(dataset.load(held_out), config.input_scale)
    if config.normalised_diameter:
        validation_set = inference.size_normalised_samples(
            validation_set, config.normalised_diameter
        )
    validation_samples = _pack(validation_set)
    del validation_set
    largest = int(train_samples.shapes[:, :2].numpy().max())
    if config.crop_size > largest:
        raise ValueError(
            f"crop_size {config.crop_size} is larger than every training image (the largest "
            f"side is {largest} pixels); crops would be mostly padding"
        )
    target_fn = pipeline.get_target_fn(config.target)
    if config.contact_weight > 0:
        # The targets get a last channel of pixel weights, which the loss reads and drops.
        target_fn = pipeline.with_contact_weights(target_fn, config.contact_weight)
    weights = sampling_weights(sources, config) if sources else None
    train_dataset = pipeline.make_training_dataset(
        train_samples,
        config.crop_size,
        config.batch_size,
        target_fn,
        config.augmentation(),
        seed=config.seed,
        skip_batches=initial_epoch * config.steps_per_epoch,
        representation=config.representation,
        sample_weights=weights,
        zooms=zooms,
    )
    validation_dataset = pipeline.make_validation_dataset(
        validation_samples,
        config.crop_size,
        config.batch_size,
        target_fn,
        representation=config.representation,
    ).cache()

    # Under a distribution strategy the model, its optimizer and metrics are made in its scope.
    with strategy.scope():
        net = build_model(replace(config, precision=precision, jit_compile=jit_compile))
        if state:
            restore_checkpoint(net, files["resume"], state)
        elif config.init_model:
            initialise_from(net, config)
    if verbose:
        print(
            f"{len(train_ids)} training and {len(held_out)} validation images; "
            f"{net.count_params():,} parameters; {strategy.num_replicas_in_sync} device(s); "
            f"{precision}{', XLA' if jit_compile else ''}"
            + (f"; resuming after epoch {initial_epoch}" if state else ""),
            flush=True,
        )

    spent = state["training_minutes"] if state else 0.0
    time_limit = TimeLimit(config.max_minutes, spent_minutes=spent)
    tracked = training_callbacks(
        config, files["best"], spent_minutes=spent, spent_epochs=initial_epoch
    )
    if state:
        # The log is rewritten from the checkpoint, dropping any epoch logged after it.
        write_log(files["log"], state["history"])
    checkpoint = EpochCheckpoint(
        files["resume"], tracked, state=state, metadata={"parameters": asdict(config)}
    )
    net.fit(
        train_dataset,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=validation_dataset,
        # The crops are already drawn in a seeded random order; Keras cannot shuffle a dataset.
        shuffle=False,
        callbacks=[
            keras.callbacks.TerminateOnNaN(),
            *tracked,
            keras.callbacks.CSVLogger(files["log"], append=bool(state)),
            time_limit,
            checkpoint,  # Last, so that on resume it restores the others after they reset.
        ],
        verbose=verbose,
    )
    if checkpoint.diverged:
        raise ValueError(
            f"training diverged (the loss became NaN) in epoch {checkpoint.diverged}; the last "
            f"good checkpoint is kept in {files['resume']}. Lower learning_rate, or check the "
            "data."
        )
    history = pd.DataFrame(checkpoint.history)
    best_epoch = int(history.val_loss.idxmin()) + 1
    averager = next((c for c in tracked if isinstance(c, WeightAverage)), None)
    averaged_epochs = averager.apply() if averager else 0
    averaged_validation = {}
    if averaged_epochs:
        # The saved model is the average, so its own validation scores go into the record.
        scores = net.evaluate(validation_dataset, verbose=0, return_dict=True)
        averaged_validation = {f"val_{key}": float(value) for key, value in scores.items()}
    if precision != "float32":
        net = float32_copy(net, config)
    result = TrainingResult(
        model=net,
        history=history,
        best_epoch=best_epoch,
        training_minutes=checkpoint.training_minutes,
        stopped_by_time=time_limit.stopped_by_time,
        resumed_after=initial_epoch,
        train_images=len(train_ids),
        validation_images=len(held_out),
        paths=files,
    )
    save_model(net, files["model"])
    best = history.iloc[best_epoch - 1]
    write_run_record(
        files["record"],
        asdict(config),
        epochs_trained=result.epochs_trained,
        best_epoch=best_epoch,
        stopped_by_time=result.stopped_by_time,
        training_minutes=round(result.training_minutes, 2),
        best_validation={
            key: float(best[key])
            for key in ("val_loss", "val_pixel_iou", "val_pixel_dice")
            if key in best
        },
        train_images=len(train_ids),
        validation_images=len(held_out),
        data=paths.portable(dataset.root),
        validation_ids=paths.portable(validation_ids),
        excluded_ids=sorted(exclude_ids),
        # The median nucleus size trained on: inference rescales images towards it.
        nucleus_diameter=diameter,
        # The epochs whose weights the saved model averages (0: the last epoch's own).
        averaged_epochs=averaged_epochs,
        averaged_validation=averaged_validation,
        # What precision="auto" chose on this machine.
        precision_used=precision,
        jit_compile_used=jit_compile,
    )
    # The run is complete and saved, so its resume checkpoint is no longer needed.
    shutil.rmtree(files["resume"], ignore_errors=True)
    if verbose:
        if averaged_epochs:
            saved = f"saved the mean of the last {averaged_epochs} epochs"
        elif config.weight_averaging:
            # Said aloud, since the user asked for an average and gets the last epoch.
            saved = "fewer than 2 epochs ended in the averaged tail, so saved the last one"
        else:
            saved = "saved"
        print(
            f"{result.epochs_trained} epochs in {result.training_minutes:.1f} min; best "
            f"validation loss in epoch {best_epoch}; {saved} as {files['model'].name}",
            flush=True,
        )
    return result
