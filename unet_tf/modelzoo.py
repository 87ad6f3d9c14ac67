"""bioimage.io model packages: ``python -m unet_tf export --format bioimageio``.

The `bioimage.io <https://bioimage.io>`_ model zoo shares models between deepImageJ (Fiji),
ilastik, QuPath, napari and Python (``bioimageio.core``). A package is a folder (and a zip of
it for upload) with an ``rdf.yaml`` of the spec's format 0.5 describing:

- the input: one channel, ``(batch, y, x, channel)``, any intensity range, sides a multiple
  of ``2**depth`` (a ``min`` and ``step`` tile constraint);
- the output: per-pixel probabilities, ``nucleus``, (for border models) ``border`` and (for
  centre models) ``center``, at
  the input's size, with a halo that tiling tools cut off;
- the weights twice: a TensorFlow SavedModel (zipped) and ONNX, both of the same graph;
- a test input and the output the weights must give for it (``.npy``), a cover image, a
  documentation page, the license, citations (U-Net, DSB2018) and the training record.

The input normalisation of :mod:`unet_tf.appearance` (gray value, inverted where the
background is bright, robust percentile range) cannot be written in the spec's
preprocessing terms: which percentiles map to 0 and 1 depends on the image's polarity. It
is therefore built into the exported graph (:class:`NucleiBright`, the very function used
in training), and the spec declares only the conversion to float32. RGB images go in as
their gray value, the mean of the channels, which is what Fiji's conversion to 8-bit gives.

Post-processing into instance labels (the watershed of :mod:`unet_tf.postprocess`) is not
part of the spec's operations; the package gives probabilities, and ``python -m unet_tf
predict`` gives labels.
"""

import json
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from unet_tf import appearance, config, files, postprocess

# Border pixels of each tile that tiling tools should discard: a 3x3-convolution U-Net of
# depth 4 sees far beyond this, but 32 pixels carry most of the context that matters for
# nuclei of the training size (about 16 pixels across), and they cost little.
HALO = 32
# Smallest tile side offered to tiling tools: the percentile range of the normalisation
# needs enough pixels to find background and nuclei, and the halo must leave a core.
MIN_TILE = 128
CITATIONS = (
    {
        "text": "Ronneberger, O., Fischer, P. and Brox, T. U-Net: Convolutional Networks for "
        "Biomedical Image Segmentation. MICCAI 2015.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    {
        "text": "Caicedo, J. C. et al. Nucleus segmentation across imaging experiments: the "
        "2018 Data Science Bowl. Nature Methods 16, 1247-1253 (2019). Data: BBBC038, CC0.",
        "doi": "10.1038/s41592-019-0612-7",
    },
)
# The code's license (pyproject.toml); the training data, DSB2018 (BBBC038), is CC0.
LICENSE = "MIT"


@keras.saving.register_keras_serializable(package="unet_tf")
class NucleiBright(keras.layers.Layer):
    """The ``nuclei_bright`` normalisation of :mod:`unet_tf.appearance` as a Keras layer.

    Each image of the batch is normalised with its own statistics, computed on the whole
    input, as :func:`unet_tf.appearance.nuclei_bright` does for one image.
    """

    def call(self, images):
        return appearance.normalize(images, appearance.batch_statistics(images))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)


def packaged_model(net: keras.Model) -> keras.Model:
    """``net`` with its input normalisation in front: what the package's weights compute.

    A ``nuclei_bright`` model (one input channel) gets :class:`NucleiBright`, so it takes a
    gray image of any intensity range; an ``rgb`` model takes RGB in [0, 1] as it is.
    """
    from unet_tf.model import model_channels

    channels = model_channels(net)
    inputs = keras.Input((None, None, channels), name="image")
    features = NucleiBright(name="nuclei_bright")(inputs) if channels == 1 else inputs
    return keras.Model(inputs, net(features), name="unet_tf_bioimageio")


def test_input(
    net: keras.Model, image: np.ndarray | None = None, size: int = 256, seed: int = 0
) -> np.ndarray:
    """The package's test input: ``(1, size, size, channels)`` float32.

    ``image`` (``(height, width, channels)`` in [0, 1]) is cropped at its centre to ``size``
    (a multiple of ``2**depth``) and, for one-channel models, turned into its gray value;
    without an image, a synthetic image of bright discs is drawn.
    """
    from unet_tf.model import model_channels, model_depth

    multiple = 2 ** model_depth(net)
    if size % multiple or size < MIN_TILE:
        raise ValueError(f"test size must be a multiple of {multiple} and >= {MIN_TILE}")
    channels = model_channels(net)
    if image is None:
        rng = np.random.default_rng(seed)
        rows, cols = np.mgrid[:size, :size]
        image = np.full((size, size), 0.05, np.float32)
        for _ in range(12):
            y, x, r = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(5, 10)
            image[(rows - y) ** 2 + (cols - x) ** 2 <= r * r] = rng.uniform(0.5, 0.9)
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or min(image.shape[:2]) < size:
        raise ValueError(f"test image must be (height, width, channels) of at least {size}²")
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    crop = image[top : top + size, left : left + size]
    if channels == 1:
        crop = crop.mean(axis=-1, keepdims=True)
    else:
        crop = appearance.to_model_input(crop, 3)
    return crop[None].astype(np.float32)


def _export_saved_model(model: keras.Model, folder: Path) -> None:
    """A SavedModel whose ``serve`` endpoint returns ``{"probabilities": ...}``.

    bioimageio.core reads the outputs of a TensorFlow 2 model as a dict, by name.
    """
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve",
        fn=lambda images: {"probabilities": model(images, training=False)},
        input_signature=[tf.TensorSpec((None, None, None, model.input_shape[-1]), tf.float32)],
    )
    archive.write_out(str(folder), verbose=False)


def _zip_folder(folder: Path, path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder))


def _onnx_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _cover(test_in: np.ndarray, test_out: np.ndarray, path: Path) -> None:
    """A 2:1 cover: the test input beside it with the nucleus probability in green."""
    from PIL import Image

    gray = test_in[0].mean(axis=-1)
    low, high = np.percentile(gray, (1, 99.8))
    gray = np.clip((gray - low) / max(high - low, 1e-6), 0, 1)
    nucleus = test_out[0, ..., 0]
    overlay = np.stack([gray * 0.6, np.maximum(gray * 0.6, nucleus), gray * 0.6], axis=-1)
    both = np.concatenate([np.repeat(gray[..., None], 3, axis=-1), overlay], axis=1)
    Image.fromarray((both * 255).astype(np.uint8)).save(path)


def _documentation(record: dict, settings: dict | None, channel_names: list[str], depth: int):
    parameters = record.get("parameters", {})
    lines = [
        "# unet-tf nucleus segmentation (U-Net, DSB2018)",
        "",
        "A U-Net (Conv2DTranspose decoder) trained with unet-tf on the "
        "Kaggle Data Science Bowl 2018 stage 1 training set (BBBC038, CC0): fluorescence, "
        "brightfield and stained tissue images of cell nuclei.",
        "",
        "## Input",
        "- One channel, `(batch, y, x, channel)`, float32, any intensity range (8 bit, 16 bit "
        "or float). RGB images: give their gray value (the mean of the channels; Fiji: "
        "*Image > Type > 8-bit*).",
        f"- Height and width a multiple of {2**depth}, at least {MIN_TILE} pixels.",
        "- The normalisation is inside the model: the gray value is inverted where the "
        "background is bright (brightfield, stained tissue), so nuclei are bright, and the "
        "1st and 99.8th percentiles are mapped to 0 and 1. It is computed on the whole input; "
        "tools that cut an image into tiles normalise each tile by itself, which is close "
        "for tiles of a few hundred pixels and more.",
    ]
    diameter = record.get("nucleus_diameter")
    if diameter:
        lines.append(
            f"- Nuclei should be about {diameter:.0f} pixels across (the median of the "
            "training images). Resample images whose nuclei are much larger or smaller; "
            "`python -m unet_tf predict` does this itself."
        )
    lines += [
        "",
        "## Output",
        f"- Probabilities in [0, 1] at the input's size, channels: {', '.join(channel_names)}.",
        "- `nucleus`: pixel inside a nucleus. "
        + (
            "`border`: pixel on a nucleus outline or between touching nuclei. "
            if "border" in channel_names
            else ""
        )
        + (
            "`center`: distance to the nucleus's edge divided by the nucleus's largest "
            "(1 at its centre, near 0 where two nuclei meet). "
            if "center" in channel_names
            else ""
        )
        + "Threshold `nucleus` at 0.5 for a mask.",
        "- Instance labels (touching nuclei split by a marker-controlled watershed) come from "
        "`python -m unet_tf predict`; the bioimage.io spec has no such post-processing step.",
    ]
    if settings:
        tuned = json.dumps(settings["postprocess"])
        lines.append(f"- Post-processing tuned on the validation split: `{tuned}`.")
    lines += ["", "## Training", ""]
    for key in ("train_images", "validation_images", "epochs_trained", "training_minutes"):
        if key in record:
            lines.append(f"- {key.replace('_', ' ')}: {record[key]}")
    for key in ("representation", "target", "loss", "depth", "base_filters", "crop_size"):
        if key in parameters:
            lines.append(f"- {key}: {parameters[key]}")
    if settings and "validation_dsb_score" in settings:
        lines.append(
            "- Validation DSB score (mean average precision at IoU 0.5-0.95, on "
            f"{record.get('validation_images', 'the')} held-out images of stage1_train): "
            f"{settings['validation_dsb_score']:.3f}"
        )
    lines += [
        "",
        "The full training record is attached (`training_record.json`), with the tuned "
        "inference settings (`inference_settings.json`).",
        "",
        "## Limits",
        "- Trained on DSB2018 only: 2-D images of nuclei. Stained tissue and brightfield "
        "images score well below fluorescence ones; judge the output on your images.",
        "",
        "## License and citation",
        f"Code and weights: {LICENSE}. Training data: CC0. Cite the U-Net paper "
        "(doi:10.1007/978-3-319-24574-4_28) and the DSB2018 data set "
        "(doi:10.1038/s41592-019-0612-7).",
    ]
    return "\n".join(lines) + "\n"


def _portable_record(record: dict) -> dict:
    """The training record without local paths (only the data folder's name is kept)."""
    record = dict(record)
    if "data" in record:
        record["data"] = Path(str(record["data"])).name
    return record


def export_package(
    model_path: str | Path,
    output_dir: str | Path | None = None,
    image: np.ndarray | None = None,
    test_size: int = 256,
    overwrite: bool = False,
    tolerance: float = 1e-4,
) -> dict[str, Path]:
    """Write a bioimage.io package of a trained model: a folder and a zip of it.

    Parameters
    ----------
    model_path : path
        A ``.keras`` model of :func:`unet_tf.training.train`, with its run record
        (``<name>.json``) and, if tuned, its inference settings beside it.
    output_dir : path, optional
        Where the package goes; by default ``models/export/<name>``. The folder is
        ``<output_dir>/<name>.bioimageio/`` and the zip ``<output_dir>/<name>.bioimageio.zip``.
    image : numpy.ndarray, optional
        An image to take the test input from (a centre crop); synthetic discs otherwise.
    test_size : int
        Side of the test input.
    overwrite : bool
        Replace an existing package; otherwise it raises ``FileExistsError``.
    tolerance : float
        Largest difference allowed between the Keras model and each exported weight
        format on the test input; a larger one raises ``ValueError``.

    Returns
    -------
    dict
        ``{"folder": ..., "zip": ..., "rdf": ...}``.

    Raises
    ------
    FileNotFoundError
        If the model or its run record is missing.
    ValueError
        If an export does not reproduce the model, or the package fails validation.
    """
    import tensorflow as tf
    from bioimageio.spec import save_bioimageio_package, save_bioimageio_package_as_folder
    from bioimageio.spec.model import v0_5 as spec

    from unet_tf import export, inference, trained
    from unet_tf.model import model_depth

    model_path = Path(model_path)
    net = trained.load_model(model_path)
    record = trained.read_run_record(model_path.with_suffix(".json"))
    try:
        settings = inference.read_settings(model_path)
    except FileNotFoundError:
        settings = None
    depth = model_depth(net)
    output_dir = Path(output_dir or config.MODELS_DIR / "export" / model_path.stem)
    folder = output_dir / f"{model_path.stem}.bioimageio"
    archive_path = output_dir / f"{model_path.stem}.bioimageio.zip"
    existing = [str(path) for path in (folder, archive_path) if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"a package exists already: {existing}; use --overwrite")

    wrapped = packaged_model(net)
    test_in = test_input(net, image, test_size)
    test_out = np.asarray(wrapped.predict_on_batch(test_in), np.float32)
    channel_names = postprocess.channel_names(test_out.shape[-1])

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bioimageio.", dir=output_dir) as scratch:
        work = Path(scratch)
        saved_model = work / "saved_model"
        _export_saved_model(wrapped, saved_model)
        _zip_folder(saved_model, work / "tf_saved_model_bundle.zip")
        wrapped.export(work / "weights.onnx", format="onnx", verbose=False)
        # Both formats must reproduce the Keras model before they are described.
        reloaded = tf.saved_model.load(str(saved_model))
        differences = {
            "tensorflow_saved_model_bundle": reloaded.serve(test_in)["probabilities"].numpy(),
            "onnx": export.load_exported(
                "onnx", work / "weights.onnx", depth, test_in.shape[-1]
            ).predict_on_batch(test_in),
        }
        for name, output in differences.items():
            largest = float(np.abs(np.asarray(output) - test_out).max())
            if largest > tolerance:
                raise ValueError(f"{name} export differs from the model by {largest:.2e}")
        np.save(work / "test_input.npy", test_in)
        np.save(work / "test_output.npy", test_out)
        _cover(test_in, test_out, work / "cover.png")
        (work / "README.md").write_text(
            _documentation(record, settings, channel_names, depth), encoding="utf-8"
        )
        files.write_json(work / "training_record.json", _portable_record(record))
        attachments = [spec.FileDescr(source=work / "training_record.json")]
        if settings:
            files.write_json(work / "inference_settings.json", settings)
            attachments.append(spec.FileDescr(source=work / "inference_settings.json"))

        multiple = 2**depth
        input_axes = [
            spec.BatchAxis(),
            spec.SpaceInputAxis(id="y", size=spec.ParameterizedSize(min=MIN_TILE, step=multiple)),
            spec.SpaceInputAxis(id="x", size=spec.ParameterizedSize(min=MIN_TILE, step=multiple)),
            spec.ChannelAxis(channel_names=["gray"] if test_in.shape[-1] == 1 else list("RGB")),
        ]
        output_axes = [
            spec.BatchAxis(),
            spec.SpaceOutputAxisWithHalo(
                id="y", halo=HALO, size=spec.SizeReference(tensor_id="image", axis_id="y")
            ),
            spec.SpaceOutputAxisWithHalo(
                id="x", halo=HALO, size=spec.SizeReference(tensor_id="image", axis_id="x")
            ),
            spec.ChannelAxis(channel_names=channel_names),
        ]
        description = spec.ModelDescr(
            name="unet-tf DSB2018 nuclei",
            description="U-Net for cell nuclei in fluorescence, brightfield and stained "
            "tissue images, trained on the Kaggle Data Science Bowl 2018 (BBBC038). "
            f"Outputs per-pixel maps: {', '.join(channel_names)}.",
            authors=[spec.Author(name="unet-tf contributors")],
            cite=[spec.CiteEntry(**entry) for entry in CITATIONS],
            license=LICENSE,
            tags=[
                "nuclei",
                "segmentation",
                "unet",
                "2d",
                "fluorescence-light-microscopy",
                "bright-field-microscopy",
                "tensorflow",
                "onnx",
                "dsb2018",
            ],
            documentation=spec.FileDescr(source=work / "README.md"),
            covers=[spec.FileDescr(source=work / "cover.png")],
            attachments=attachments,
            timestamp=datetime.now(UTC).replace(microsecond=0),
            inputs=[
                spec.InputTensorDescr(
                    id="image",
                    description="gray image (mean of the colour channels), any range; "
                    "normalised inside the model",
                    axes=input_axes,
                    test_tensor=spec.FileDescr(source=work / "test_input.npy"),
                    data=spec.IntervalOrRatioDataDescr(type="float32"),
                    preprocessing=[
                        spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))
                    ],
                )
            ],
            outputs=[
                spec.OutputTensorDescr(
                    id="probabilities",
                    description="per-pixel probabilities: " + ", ".join(channel_names),
                    axes=output_axes,
                    test_tensor=spec.FileDescr(source=work / "test_output.npy"),
                    data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
                )
            ],
            weights=spec.WeightsDescr(
                tensorflow_saved_model_bundle=spec.TensorflowSavedModelBundleWeightsDescr(
                    source=work / "tf_saved_model_bundle.zip",
                    tensorflow_version=tf.__version__,
                ),
                onnx=spec.OnnxWeightsDescr(
                    source=work / "weights.onnx",
                    opset_version=_onnx_opset(work / "weights.onnx"),
                    parent="tensorflow_saved_model_bundle",
                ),
            ),
        )
        for path in (folder, archive_path):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        save_bioimageio_package_as_folder(description, output_path=folder)
        save_bioimageio_package(description, output_path=archive_path)
    return {"folder": folder, "zip": archive_path, "rdf": folder / "rdf.yaml"}


def validate_package(path: str | Path) -> str:
    """Validate a package (folder, ``rdf.yaml`` or zip) with ``bioimageio.spec``.

    Returns the validation status (``"valid-format"`` when the format is valid).

    Raises
    ------
    FileNotFoundError
        If there is no package at ``path``.
    ValueError
        If the package is invalid; the message holds the validation errors.
    """
    from bioimageio.spec import load_description

    path = Path(path)
    if path.is_dir():
        path = path / "rdf.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no bioimage.io package here")
    described = load_description(path, format_version="discover", perform_io_checks=True)
    summary = described.validation_summary
    if summary.status == "failed":
        raise ValueError(f"{path}: not a valid bioimage.io package:\n{summary.display()}")
    return summary.status


def test_package(path: str | Path) -> dict:
    """Run ``bioimageio.core``'s model test on a package: every weight format on the test
    input, compared with the test output, at several sizes and batch sizes.

    Returns ``{"status": ..., "checks": [{"name", "status"}, ...]}``; the status is
    ``"not run"`` where ``bioimageio.core`` is not installed.
    """
    import contextlib

    try:
        from bioimageio.core import test_model
    except ImportError as error:
        return {"status": "not run", "checks": [], "reason": str(error)}
    path = Path(path).resolve()
    # The TensorFlow backend unpacks the weights into the working directory.
    with tempfile.TemporaryDirectory(prefix="bioimageio-test.") as scratch:
        with contextlib.chdir(scratch):
            summary = test_model(path)
    checks = [{"name": detail.name, "status": detail.status} for detail in summary.details]
    return {"status": summary.status, "checks": checks}


def default_test_image() -> np.ndarray | None:
    """The first validation image with both sides at least 256 pixels, or None without data."""
    from unet_tf import data, decoding

    try:
        ids = data.load_ids(config.VALIDATION_IDS)
    except FileNotFoundError:
        return None
    for image_id in ids:
        path = Path(config.TRAIN_DIR) / image_id / "images" / f"{image_id}.png"
        if path.is_file():
            image = decoding.read_image(path)
            if min(image.shape[:2]) >= 256:
                return image
    return None
