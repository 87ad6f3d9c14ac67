"""Export a trained model for use outside Keras: ``python -m unet_tf export``.

Formats (all take images of any size, ``(batch, height, width, 3)`` float32 in [0, 1],
with height and width multiples of ``2**depth``):

==================  ===========================================================
``keras``           Keras 3 ``.keras`` file (a copy of the trained model)
``saved_model``     TensorFlow SavedModel folder, signature ``serve``
``tflite_float32``  TensorFlow Lite, float32 weights and compute
``tflite_float16``  TensorFlow Lite, float16 weights (half the size)
``tflite_int8``     TensorFlow Lite, int8 weights and activations, calibrated on
                    crops of training images; float32 input and output
``onnx``            ONNX (opset chosen by tf2onnx), for onnxruntime and others
==================  ===========================================================

Every export is loaded back after writing and run on sample images next to the Keras
model. Float exports must agree within ``1e-4`` (largest absolute difference of the
probabilities); quantized ones within the mean absolute difference stated in
``TOLERANCES``. The command prints a table of file size, agreement and CPU latency per
format, and, when the DSB2018 data are present, the validation DSB score reached with each
export (same post-processing as the Keras model), and writes it all to ``export.json``.
"""

import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from unet_tf import config

FORMATS = (
    "keras",
    "saved_model",
    "tflite_float32",
    "tflite_float16",
    "tflite_int8",
    "onnx",
)
# Not a file format but a model package for the bioimage.io zoo (see unet_tf.modelzoo).
PACKAGE = "bioimageio"
# (measure, bound): float formats are held to the largest pixel difference, quantized ones
# to the mean, since rounding moves every pixel a little and a few by more.
TOLERANCES = {
    "keras": ("max", 1e-4),
    "saved_model": ("max", 1e-4),
    "tflite_float32": ("max", 1e-4),
    "onnx": ("max", 1e-4),
    "tflite_float16": ("mean", 0.005),
    "tflite_int8": ("mean", 0.05),
}
SUFFIXES = {
    "keras": ".keras",
    "saved_model": "_saved_model",
    "tflite_float32": "_float32.tflite",
    "tflite_float16": "_float16.tflite",
    "tflite_int8": "_int8.tflite",
    "onnx": ".onnx",
}


class ExportedModel:
    """An exported model behind the one method :mod:`unet_tf.inference` calls.

    ``predict_on_batch`` takes ``(batch, height, width, channels)`` float32 and returns the
    probabilities as numpy; ``depth`` tells the inference code what to pad images to, and
    ``channels`` which input representation the model takes (3: RGB, 1: ``nuclei_bright``).
    """

    def __init__(self, fmt: str, path: Path, depth: int, predict: Callable, channels: int = 3):
        self.format, self.path, self.depth, self.channels = fmt, Path(path), depth, channels
        self._predict = predict

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(np.ascontiguousarray(batch, dtype=np.float32)))


def export_path(output_dir: Path, stem: str, fmt: str) -> Path:
    """Where ``fmt`` is written: ``<output_dir>/<stem><suffix>``."""
    return Path(output_dir) / f"{stem}{SUFFIXES[fmt]}"


def _tflite_converter(net, fmt: str, representative: Sequence[np.ndarray]):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    if fmt == "tflite_float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif fmt == "tflite_int8":
        if not len(representative):
            raise ValueError("tflite_int8 needs representative images to calibrate on")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [np.asarray(image, np.float32)[None]] for image in representative
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # Inputs and outputs stay float32, so callers need not know the quantization.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    return converter


def _write_format(net, fmt: str, partial: Path, representative) -> None:
    if fmt == "keras":
        net.save(partial)
    elif fmt == "saved_model":
        net.export(partial, format="tf_saved_model", verbose=False)
    elif fmt.startswith("tflite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            partial.write_bytes(_tflite_converter(net, fmt, representative).convert())
    elif fmt == "onnx":
        net.export(partial, format="onnx", verbose=False)
    else:
        raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")


def export_model(
    net,
    output_dir: str | Path,
    formats: Sequence[str] = FORMATS,
    representative: Sequence[np.ndarray] = (),
    stem: str = "unet",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``net`` in each of ``formats`` into ``output_dir``; returns the paths.

    Each file or folder is written under a temporary name and renamed when complete, so an
    interrupted export never leaves a half-written model under the final name.

    Parameters
    ----------
    net : keras.Model
        The model to export (from :func:`unet_tf.model.get_model`).
    output_dir : path
        Folder of the exports.
    formats : sequence of str
        Names from ``FORMATS``.
    representative : sequence of numpy.ndarray
        ``(height, width, 3)`` float32 images for int8 calibration.
    stem : str
        File name stem of the exports.
    overwrite : bool
        Replace existing exports; otherwise an existing one raises ``FileExistsError``.
    """
    from unet_tf.model import model_depth

    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {fmt: export_path(output_dir, stem, fmt) for fmt in formats}
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"exports exist already: {existing}; use --overwrite")
    # Keras and tf2onnx need a model that has been called once to know its graph.
    multiple = 2 ** model_depth(net)
    net.predict_on_batch(np.zeros((1, multiple, multiple, net.input_shape[-1]), np.float32))
    for fmt, path in paths.items():
        partial = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=output_dir)) / path.name
        try:
            _write_format(net, fmt, partial, representative)
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(partial, path)
        finally:
            shutil.rmtree(partial.parent, ignore_errors=True)
    return paths


def load_exported(fmt: str, path: str | Path, depth: int, channels: int = 3) -> ExportedModel:
    """Load an export written by :func:`export_model` for inference.

    Raises
    ------
    FileNotFoundError
        If the export does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {fmt} export")
    if fmt == "keras":
        import keras

        net = keras.models.load_model(path, compile=False)
        return ExportedModel(fmt, path, depth, net.predict_on_batch, channels)
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return ExportedModel(fmt, path, depth, lambda batch: loaded.serve(batch).numpy(), channels)
    if fmt.startswith("tflite"):
        import tensorflow as tf

        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it moves to the ai-edge-litert package; it is
            # the interpreter that ships with our pinned TensorFlow.
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(path))
        state = {"shape": None}

        def run(batch):
            (input_detail,) = interpreter.get_input_details()
            if state["shape"] != batch.shape:
                interpreter.resize_tensor_input(input_detail["index"], batch.shape)
                interpreter.allocate_tensors()
                state["shape"] = batch.shape
            interpreter.set_tensor(input_detail["index"], batch)
            interpreter.invoke()
            return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()

        return ExportedModel(fmt, path, depth, run, channels)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return ExportedModel(
            fmt, path, depth, lambda batch: session.run(None, {name: batch})[0], channels
        )
    raise ValueError(f"unknown export format {fmt!r}; choose from {FORMATS}")


def size_bytes(path: Path) -> int:
    """Size of a file, or of all files in a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def latency_ms(model, batch: np.ndarray, repeats: int = 5) -> float:
    """Median wall time of one ``predict_on_batch`` call, after one warm-up call."""
    model.predict_on_batch(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def compare(reference: np.ndarray, exported: np.ndarray, fmt: str) -> dict:
    """Agreement of an export's output with the Keras model's, against its tolerance."""
    difference = np.abs(np.asarray(exported, np.float64) - np.asarray(reference, np.float64))
    measure, bound = TOLERANCES[fmt]
    value = float(difference.max() if measure == "max" else difference.mean())
    return {
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
        "tolerance": f"{measure} <= {bound:g}",
        "within_tolerance": bool(value <= bound),
    }


def check_exports(
    net,
    paths: dict[str, Path],
    samples: Sequence[np.ndarray],
    latency_batch: np.ndarray | None = None,
) -> list[dict]:
    """Load every export back and compare it with ``net`` on ``samples``; returns rows.

    ``samples`` are ``(height, width, 3)`` images whose sides are multiples of
    ``2**depth``; ``latency_batch`` (by default the first sample) is timed per format.
    """
    from unet_tf.model import model_channels, model_depth

    depth, channels = model_depth(net), model_channels(net)
    latency_batch = samples[0][None] if latency_batch is None else latency_batch
    reference = [net.predict_on_batch(sample[None]) for sample in samples]
    rows = []
    for fmt, path in paths.items():
        exported = load_exported(fmt, path, depth, channels)
        outputs = [exported.predict_on_batch(sample[None]) for sample in samples]
        rows.append(
            {
                "format": fmt,
                "path": path.name,
                "size_mb": round(size_bytes(path) / 1e6, 3),
                **compare(np.concatenate(reference, None), np.concatenate(outputs, None), fmt),
                "latency_ms": round(latency_ms(exported, latency_batch), 1),
            }
        )
    return rows


def validation_scores(
    models: dict[str, object], settings: dict, max_images: int = 0, tta: bool = False
) -> dict[str, float]:
    """Mean validation DSB score of each model, all with the same post-processing.

    The validation images are read once and every model segments them with
    ``settings["postprocess"]`` at ``settings["tile_size"]``; TTA is off by default to keep
    the comparison quick, which is the same for every format.
    """
    from unet_tf import evaluation

    samples = evaluation.validation_samples(max_images)
    settings = {**settings, "tta": tta}
    return {
        name: float(evaluation.score_model(model, samples, settings).dsb_score.mean())
        for name, model in models.items()
    }


def calibration_crops(
    count: int = 32, size: int = 256, seed: int = 2018, multiple: int = 16, channels: int = 3
) -> list[np.ndarray]:
    """Random ``size`` crops of training-split images, for int8 calibration and checks.

    Images smaller than ``size`` are used whole, cut down to a multiple of ``multiple``. The
    crops are in the input representation of a model with ``channels`` inputs, computed on
    the whole image as inference does (see ``appearance.to_model_input``).

    Raises
    ------
    FileNotFoundError
        If the training data are missing (run ``make data``).
    """
    from unet_tf import appearance, data

    train_ids, _ = data.train_validation_ids(config.TRAIN_DIR, config.VALIDATION_IDS)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train_ids, size=min(count, len(train_ids)), replace=False)
    crops = []
    for _, image, _ in data.load_samples(config.TRAIN_DIR, ids=list(chosen), with_labels=False):
        image = appearance.to_model_input(image, channels)
        height, width = (min(side, size) // multiple * multiple for side in image.shape[:2])
        top = int(rng.integers(0, image.shape[0] - height + 1))
        left = int(rng.integers(0, image.shape[1] - width + 1))
        crops.append(image[top : top + height, left : left + width])
    return crops


def format_table(rows: Sequence[dict], scores: dict[str, float] | None = None) -> str:
    """The check results as a Markdown table."""
    header = "| format | size MB | max abs diff | mean abs diff | tolerance | ok | latency ms |"
    if scores:
        header += " validation DSB |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        line = (
            f"| {row['format']} | {row['size_mb']:.2f} | {row['max_abs_difference']:.2e} | "
            f"{row['mean_abs_difference']:.2e} | {row['tolerance']} | "
            f"{'yes' if row['within_tolerance'] else 'NO'} | {row['latency_ms']:.1f} |"
        )
        if scores:
            line += f" {scores[row['format']]:.3f} |"
        lines.append(line)
    return "\n".join(lines)
