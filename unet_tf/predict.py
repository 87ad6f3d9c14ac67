"""Segment, count and measure nuclei in your own images: ``python -m unet_tf predict``.

For every input image the command writes, into the output folder:

- ``<name>_labels.tif`` (or ``.png``): the nuclei as a 16-bit instance-label image, 0 for
  background and 1..N for the nuclei (32-bit TIFF above 65,535 nuclei);
- ``<name>_overlay.png``: the image with each nucleus outlined, for a quick look;

and, for the whole run, ``nuclei.csv`` (a row per nucleus: area, perimeter, centroid,
equivalent diameter, eccentricity, solidity, mean intensity) and ``summary.csv`` (a row per
image: nucleus count, coverage, mean and median area). With ``--pixel-size`` the lengths and
areas are also given in micrometres.

The model, its tuned post-processing and TTA are those ``make report`` chose (read from
``models/<name>.inference.json``), and the images go through the same full-resolution tiled
inference as the notebooks. Files that cannot be read are reported and skipped; the exit
status is then 1. Existing outputs are never overwritten without ``--overwrite``.

A run stopped by SIGINT or SIGTERM ends cleanly (exit status 130 or 143) with the tables of
the images it finished; ``--resume`` continues it from the record it keeps in the output
folder (:mod:`unet_tf.journal`).
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# TensorFlow is imported only when a model is loaded, so that --help and argument errors
# answer at once.
from unet_tf import data, files, interrupt, journal, postprocess

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
NUCLEUS_COLUMNS = [
    "image",
    "plane",
    "label",
    "area",
    "perimeter",
    "centroid_y",
    "centroid_x",
    "equivalent_diameter",
    "eccentricity",
    "solidity",
    "mean_intensity",
]
MICROMETRE_COLUMNS = ["area_um2", "perimeter_um", "equivalent_diameter_um"]
SUMMARY_COLUMNS = [
    "image",
    "plane",
    "height",
    "width",
    "nuclei",
    "coverage",
    "mean_area",
    "median_area",
    "scale",
    "seconds",
]
SUMMARY_MICROMETRE_COLUMNS = ["mean_area_um2", "median_area_um2"]
LABEL_FORMATS = ("tif", "png")
EXTRAS = ("rois", "geojson")


@dataclass(frozen=True)
class PredictOptions:
    """What ``predict`` writes and reads from each file, besides the model's settings.

    Attributes
    ----------
    pixel_size : float, optional
        Micrometres per pixel: adds lengths and areas in micrometres.
    label_format : str
        ``"tif"`` or ``"png"`` for the label images.
    channel, plane, max_projection :
        Which channel, and which plane of a stack (or its maximum projection), is segmented
        (see :func:`unet_tf.stacks.read_stack`).
    extras : tuple of str
        Outlines written too: ``"rois"`` (ImageJ ROIs), ``"geojson"`` (QuPath).
    block_size : int, optional
        Images with a side above it are segmented in blocks; 0 never; None: those of more
        than ``large.LARGE_PIXELS`` pixels.
    """

    pixel_size: float | None = None
    label_format: str = "tif"
    channel: int | None = None
    plane: int | None = None
    max_projection: bool = False
    extras: tuple[str, ...] = ()
    block_size: int | None = None

    def __post_init__(self):
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise ValueError(f"--pixel-size must be positive, got {self.pixel_size}")
        if self.block_size is not None and self.block_size < 0:
            raise ValueError(f"--block-size must be 0 (never) or positive, got {self.block_size}")
        if self.label_format not in LABEL_FORMATS:
            raise ValueError(
                f"the label format must be one of {LABEL_FORMATS}, got {self.label_format!r}"
            )
        unknown = set(self.extras) - set(EXTRAS)
        if unknown:
            raise ValueError(f"unknown extra outputs {sorted(unknown)}; known: {EXTRAS}")
        if self.plane is not None and self.max_projection:
            raise ValueError("--plane and --max-projection exclude each other")
        object.__setattr__(self, "extras", tuple(self.extras))


def nucleus_columns(pixel_size: float | None, assessed: bool = False) -> list[str]:
    """The columns of ``nuclei.csv``: micrometre ones too when a pixel size is given, and
    ``confidence`` when the model has a quality estimate."""
    micrometres = MICROMETRE_COLUMNS if pixel_size else []
    return NUCLEUS_COLUMNS + micrometres + (["confidence"] if assessed else [])


def summary_columns(pixel_size: float | None, assessed: bool = False) -> list[str]:
    """The columns of ``summary.csv``: micrometre ones too when a pixel size is given, and
    ``expected_dsb`` and ``reliable`` when the model has a quality estimate."""
    micrometres = SUMMARY_MICROMETRE_COLUMNS if pixel_size else []
    verdict = ["expected_dsb", "reliable"] if assessed else []
    return SUMMARY_COLUMNS[:-2] + micrometres + verdict + SUMMARY_COLUMNS[-2:]


def find_inputs(
    inputs: Iterable[str | Path], recursive: bool = False
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files named by ``inputs``, and the inputs passed over with their reasons.

    Files given by name are kept whatever their suffix, so that one that is not an image is
    reported rather than silently left out. Folders are listed for image suffixes (hidden
    files skipped); what they hold under an image's name that cannot be an image (a broken
    link, a folder, a pipe) is passed over with its reason, as is a broken link given by
    name.

    Raises
    ------
    FileNotFoundError
        If an input does not exist.
    ValueError
        If no image is found.
    """
    inputs = list(inputs)
    found: list[Path] = []
    passed_over: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_file():
            found.append(item)
        elif item.is_dir():
            listing = item.rglob("*") if recursive else item.iterdir()
            for path in sorted(listing):
                if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
                    continue
                if path.is_file():
                    found.append(path)
                elif not (recursive and path.is_dir()):
                    passed_over.append((path, _not_an_image(path)))
        elif item.is_symlink():
            passed_over.append((item, _not_an_image(item)))
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not found:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        reasons = "".join(f"; {reason}" for _, reason in passed_over)
        raise ValueError(
            f"no image files ({suffixes}) in {[str(item) for item in inputs]}{reasons}"
        )
    return list(dict.fromkeys(found)), passed_over


def _not_an_image(path: Path) -> str:
    """Why ``path``, named like an image, is not one that can be read."""
    if path.is_symlink() and not path.exists():
        return f"{path}: a broken link (to {os.readlink(path)})"
    if path.is_dir():
        return f"{path}: a folder, not an image (--recursive looks inside folders)"
    return f"{path}: not a regular file"


def find_images(inputs: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """The image files named by ``inputs`` (see :func:`find_inputs`)."""
    return find_inputs(inputs, recursive)[0]


def output_names(
    paths: Sequence[Path], label_format: str = "tif", extras: Sequence[str] = ()
) -> dict[Path, dict[str, str]]:
    """File names of each image's outputs; two inputs with the same name are disambiguated.

    ``extras`` adds the outlines asked for: ``"rois"`` (``<name>_rois.zip``, ImageJ ROIs)
    and ``"geojson"`` (``<name>.geojson``).

    The names are the input's stem; when two inputs share a stem (``a/x.png`` and
    ``b/x.tif``), the suffix and then the parent folder are added until they differ.
    """
    stems = {}
    for path in paths:
        for candidate in (path.stem, path.name, f"{path.parent.name}_{path.name}"):
            if candidate not in stems.values():
                stems[path] = candidate
                break
        else:
            stems[path] = f"{len(stems)}_{path.name}"
    suffixes = {"rois": "_rois.zip", "geojson": ".geojson"}
    return {
        path: {
            "labels": f"{stem}_labels.{label_format}",
            "overlay": f"{stem}_overlay.png",
            **{extra: stem + suffixes[extra] for extra in extras},
        }
        for path, stem in stems.items()
    }


def to_model_input(
    pixels: np.ndarray,
    path: Path,
    window: Sequence[float] | None = None,
    conversion: dict | None = None,
) -> np.ndarray:
    """Float32 ``(H, W, 3)`` model input in [0, 1] from raw pixels of any type.

    8-bit images are scaled as in training (divided by 255). Images of other types (16-bit
    microscopy, float) rarely use their full range, so they are scaled to put their 99.9th
    percentile at 1: a 12-bit image in a 16-bit file then looks to the model as it would
    have as an 8-bit export. A model trained through an intensity window (CT) gets its
    images through the same window. ``conversion`` (see :func:`input_conversion`) holds
    these numbers for a whole image when ``pixels`` is one block of it.
    """
    if window:
        from unet_tf import datasets

        return datasets.apply_window(pixels, window, path)
    if conversion is None:
        values = data.value_range(pixels, path)
        image = data.pixels_to_image(pixels, path, channels=3, values=values)
        top = _white_point(image, pixels.dtype)
    else:
        image = data.pixels_to_image(pixels, path, channels=3, values=conversion["values"])
        top = conversion["top"]
    return np.clip(image / top, 0.0, 1.0) if top is not None else image


def _white_point(image: np.ndarray, dtype: np.dtype) -> float | None:
    """The value put at 1 in an image that is not 8-bit (its 99.9th percentile); None for
    8-bit images, and for images without any bright pixel."""
    if dtype == np.uint8:
        return None
    top = float(np.percentile(image, 99.9))
    return top if top > 0 else None


def input_conversion(pixels: np.ndarray, path: Path, sample_pixels: int) -> dict:
    """How :func:`to_model_input` scales an image, for converting it block by block: its
    value range, and the value put at 1 (estimated on a regular subsample of at most
    ``sample_pixels`` pixels).
    """
    values = data.value_range(pixels, path)
    stride = data.sample_stride(pixels.shape, sample_pixels)
    sample = data.pixels_to_image(pixels[::stride, ::stride], path, channels=3, values=values)
    return {"values": values, "top": _white_point(sample, pixels.dtype)}


def intensity_channel(pixels: np.ndarray) -> np.ndarray:
    """The raw intensity for measurements: the mean over colour channels, alpha dropped."""
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] in (2, 4):
        pixels = pixels[..., :-1]
    return pixels.mean(axis=-1)


def measure(
    labels: np.ndarray,
    intensity: np.ndarray,
    image_name: str,
    pixel_size: float | None = None,
    plane: int = 0,
) -> pd.DataFrame:
    """A row per nucleus of ``labels`` with the columns of ``NUCLEUS_COLUMNS``.

    ``plane`` is the plane of a stack the labels belong to (0 for a 2-D image).

    Lengths and areas are in pixels; with ``pixel_size`` (micrometres per pixel) the columns
    of ``MICROMETRE_COLUMNS`` are added.
    """
    from skimage.measure import regionprops_table

    columns = nucleus_columns(pixel_size)
    if labels.max() == 0:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(
        regionprops_table(
            labels,
            intensity_image=intensity,
            properties=(
                "label",
                "area",
                "perimeter",
                "centroid",
                "equivalent_diameter_area",
                "eccentricity",
                "solidity",
                "intensity_mean",
            ),
        )
    ).rename(
        columns={
            "centroid-0": "centroid_y",
            "centroid-1": "centroid_x",
            "equivalent_diameter_area": "equivalent_diameter",
            "intensity_mean": "mean_intensity",
        }
    )
    table.insert(0, "image", image_name)
    table.insert(1, "plane", plane)
    table["area"] = table["area"].astype(int)
    if pixel_size:
        table["area_um2"] = table["area"] * pixel_size**2
        table["perimeter_um"] = table["perimeter"] * pixel_size
        table["equivalent_diameter_um"] = table["equivalent_diameter"] * pixel_size
    return table[columns]


# Label images with more pixels than this are written as tiled TIFF (BigTIFF past 4 GB).
LARGE_LABELS = 1 << 24


def write_labels(path: Path, labels: np.ndarray) -> None:
    """Write instance labels as a 16-bit TIFF or PNG (32-bit TIFF if they need it), atomically.

    Raises
    ------
    ValueError
        If a PNG would need more than 16 bits, or the suffix is neither .tif(f) nor .png.
    """
    from PIL import Image

    wide = labels.max(initial=0) > np.iinfo(np.uint16).max
    suffix = path.suffix.lower()
    with files.atomic_path(path) as partial:
        if suffix in (".tif", ".tiff"):
            import tifffile

            values = labels.astype(np.uint32 if wide else np.uint16, copy=False)
            options = {}
            if labels.size > LARGE_LABELS:
                # Tiles let viewers read a region without the whole image; past 4 GB the
                # classic TIFF offsets overflow, so BigTIFF.
                options = {"tile": (512, 512), "bigtiff": values.nbytes > 2**32 - 2**25}
            tifffile.imwrite(partial, values, compression="zlib", **options)
        elif suffix == ".png":
            if wide:
                raise ValueError(f"{path}: more than 65,535 nuclei do not fit a PNG; use TIFF")
            Image.fromarray(labels.astype(np.uint16)).save(partial, format="PNG")
        else:
            raise ValueError(f"{path}: label images are written as .tif or .png")


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an 8-bit RGB image as PNG, atomically."""
    from PIL import Image

    with files.atomic_path(path) as partial:
        Image.fromarray(rgb).save(partial, format="PNG")


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with files.atomic_path(path) as partial:
        frame.to_csv(partial, index=False, float_format="%.6g")


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
    from unet_tf import datasets, inference, training

    net = training.load_model(model_path)
    record_path = Path(model_path).with_suffix(".json")
    record = training.read_run_record(record_path) if record_path.is_file() else {}
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


@dataclass
class PlaneResult:
    """One plane segmented and measured."""

    labels: np.ndarray
    # The image with the nuclei outlined, 8-bit RGB.
    overlay: np.ndarray
    # A row per nucleus (NUCLEUS_COLUMNS) and the plane's row of the summary.
    table: pd.DataFrame
    row: dict

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The result as arrays, to keep it as a finished piece of a stack."""
        return {
            "labels": self.labels,
            "overlay": self.overlay,
            "row": np.array(json.dumps(self.row)),
            **journal.table_arrays(self.table, "nuclei"),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "PlaneResult":
        """The result :meth:`to_arrays` kept."""
        table = journal.arrays_table(arrays, "nuclei")
        return cls(arrays["labels"], arrays["overlay"], table, json.loads(str(arrays["row"])))


def _segment_plane(
    net,
    pixels,
    path,
    settings,
    options: PredictOptions,
    plane,
    parts=None,
    progress=True,
    estimate=None,
) -> PlaneResult:
    """Segment and measure one plane.

    Large planes (see :func:`unet_tf.large.is_large`) are segmented block by block, the
    finished blocks kept in ``parts`` (a :class:`unet_tf.journal.Parts`), with an overlay
    downsampled to at most ``large.OVERLAY_SIDE`` pixels a side. With a quality
    ``estimate`` (:class:`unet_tf.quality.QualityModel`) the nuclei get a ``confidence``
    and the plane an ``expected_dsb`` and ``reliable`` (left empty for planes segmented in
    blocks); an unreliable plane's overlay says so.
    """
    from unet_tf import inference, large, plots, quality

    started = time.monotonic()
    name, pixel_size = path.name, options.pixel_size
    if large.is_large(pixels.shape, options.block_size):
        result = large.segment_large(
            net,
            pixels,
            path,
            settings,
            name,
            plane,
            pixel_size,
            block_size=options.block_size or large.BLOCK_SIZE,
            progress=progress,
            parts=parts,
        )
        labels, table, scale, overlay = result.labels, result.table, result.scale, result.overlay
        verdict = {"expected_dsb": np.nan, "reliable": None}
        confidence = np.full(len(table), np.nan)
    else:
        image = to_model_input(pixels, path, settings.get("window"))
        if estimate is None:
            output, scale = inference.predict(net, image, settings)
        else:
            # With the TTA views' disagreement, which the quality estimate reads.
            output, scale, spread = inference.predict(net, image, settings, spread=True)
        labels = inference.to_labels(output, settings, scale)
        overlay = plots.overlay(image, prediction=labels, as_uint8=True)
        table = measure(labels, intensity_channel(pixels), name, pixel_size, plane)
        if estimate is not None:
            confidence, verdict = quality.assess(estimate, labels, output, spread, scale, image)
            if not verdict["reliable"]:
                overlay = plots.mark_unreliable(overlay, verdict["expected_dsb"])
    if estimate is not None:
        table["confidence"] = confidence
    areas = table["area"].to_numpy()
    row = {
        "image": name,
        "plane": plane,
        "height": labels.shape[0],
        "width": labels.shape[1],
        "nuclei": len(table),
        "coverage": float(np.count_nonzero(labels) / labels.size),
        "mean_area": float(areas.mean()) if areas.size else 0.0,
        "median_area": float(np.median(areas)) if areas.size else 0.0,
    }
    if pixel_size:
        row["mean_area_um2"] = row["mean_area"] * pixel_size**2
        row["median_area_um2"] = row["median_area"] * pixel_size**2
    if estimate is not None:
        row["expected_dsb"] = round(verdict["expected_dsb"], 3)
        row["reliable"] = verdict["reliable"]
    # The resampling applied to bring the nuclei to the training size (1: none).
    row["scale"] = round(scale, 3)
    row["seconds"] = round(time.monotonic() - started, 2)
    return PlaneResult(labels, overlay, table, row)


def _segment_file(
    net, stack, path, settings, options, parts, progress, estimate=None
) -> list[PlaneResult]:
    """Segment every plane of a file; each finished plane of a stack is kept in ``parts``,
    and taken from there when the run continues."""
    if not stack.is_stack:
        return [
            _segment_plane(
                net, stack.planes[0], path, settings, options, 0, parts, progress, estimate
            )
        ]
    results = []
    for index, pixels in enumerate(stack.planes):
        piece = f"plane-{index:04d}"
        kept = parts.load(piece)
        if kept is None:
            result = _segment_plane(
                net, pixels, path, settings, options, index, parts.within(piece), progress, estimate
            )
            parts.save(piece, **result.to_arrays())
        else:
            result = PlaneResult.from_arrays(kept)
        results.append(result)
    return results


def _write_outputs(output_dir, names, stack, results, options) -> list[Path]:
    """Write an image's label image, overlays and outlines; returns the files written."""
    from unet_tf import outlines, stacks

    labels_path = output_dir / names["labels"]
    written = [labels_path]
    if stack.is_stack:
        stacks.write_label_stack(labels_path, [r.labels for r in results], stack.axes, stack.shape)
        stem = names["overlay"].removesuffix(".png")
        for index, result in enumerate(results):
            written.append(output_dir / f"{stem}_p{index:03d}.png")
            write_png(written[-1], result.overlay)
    else:
        write_labels(labels_path, results[0].labels)
        written.append(output_dir / names["overlay"])
        write_png(written[-1], results[0].overlay)
    if options.extras:
        traced = [outlines.polygons(result.labels) for result in results]
        if "rois" in options.extras:
            written.append(output_dir / names["rois"])
            outlines.write_imagej_rois(written[-1], traced)
        if "geojson" in options.extras:
            written.append(output_dir / names["geojson"])
            outlines.write_geojson(written[-1], traced)
    return written


@dataclass
class Outcome:
    """What a run of :func:`predict_images` did."""

    # Images whose outputs are complete, in the order of the inputs.
    finished: list[Path]
    # Of them, those a run before this one finished (continued with resume).
    reused: int
    # Images that could not be read or predicted, with the reason.
    skipped: list[tuple[Path, str]]
    # Nuclei in nuclei.csv.
    nuclei: int


def predict_images(
    net,
    paths: Sequence[Path],
    run: "journal.Journal",
    settings: dict,
    options: PredictOptions = PredictOptions(),
    progress: bool = True,
    estimate=None,
) -> Outcome:
    """Segment and measure each image, writing its outputs and the run's tables.

    The outputs go to ``run.output_dir``; images that ``run`` (a
    :class:`unet_tf.journal.Journal`) records as finished with all of their outputs in
    place are not predicted again. ``nuclei.csv`` and ``summary.csv`` are written at the
    end, and also when the run is stopped (:class:`unet_tf.interrupt.Stopped`, which then
    carries ``finished`` and ``total`` counts): they always hold exactly the finished
    images.

    Stacks (z-stacks, time series) are segmented plane by plane in 2-D: their labels are
    one TIFF with a plane per input plane and the same axes, with an overlay per plane
    (``<name>_overlay_p<index>.png``), a row per plane in the summary and a ``plane``
    column in the nucleus table. ``options.extras`` asks for the nuclei's outlines too, as
    ImageJ ROIs and GeoJSON (see :mod:`unet_tf.outlines`). Large images are segmented in
    blocks with bounded memory (see :mod:`unet_tf.large`). Finished planes of a stack and
    blocks of a large image are kept, so that a stopped run continues from them. With a
    quality ``estimate`` (:class:`unet_tf.quality.QualityModel`) the tables get a
    ``confidence`` per nucleus and an ``expected_dsb`` and ``reliable`` per image.
    """
    from tqdm.auto import tqdm

    from unet_tf import stacks

    names = output_names(paths, options.label_format, options.extras)
    keys = {path: names[path]["overlay"].removesuffix("_overlay.png") for path in paths}
    _remove_partial_files(run, names.values())
    todo = [path for path in paths if not run.is_finished(keys[path], path)]
    skipped = []
    try:
        with tqdm(todo, desc="images", unit="image", disable=not progress, file=sys.stderr) as bar:
            for path in bar:
                try:
                    stack = stacks.read_stack(
                        path, options.channel, options.plane, options.max_projection
                    )
                    if stack.is_stack and options.label_format != "tif":
                        raise ValueError(
                            f"{path}: a stack's labels are written as TIFF; drop --format"
                        )
                except (OSError, ValueError) as error:
                    skipped.append((path, str(error)))
                    continue
                parts = run.parts(keys[path])
                try:
                    results = _segment_file(
                        net, stack, path, settings, options, parts, progress, estimate
                    )
                except (ValueError, MemoryError) as error:
                    name = type(error).__name__
                    skipped.append((path, f"{path}: prediction failed ({name}: {error})"))
                    continue
                # The files of an image are written as one: a stop waits until they are.
                with interrupt.deferred():
                    written = _write_outputs(run.output_dir, names[path], stack, results, options)
                    tables = _tables(results, options, estimate is not None)
                    run.finish(keys[path], path, written, *tables)
    except interrupt.Stopped as stop:
        stop.finished = sum(run.is_finished(keys[path], path) for path in paths)
        stop.total = len(paths)
        raise
    finally:
        with interrupt.deferred():
            nuclei = run.write_tables(
                [keys[path] for path in paths],
                nucleus_columns(options.pixel_size, estimate is not None),
                summary_columns(options.pixel_size, estimate is not None),
            )
    finished = [path for path in paths if run.is_finished(keys[path], path)]
    return Outcome(finished, len(paths) - len(todo), skipped, nuclei)


def _tables(
    results: list[PlaneResult], options, assessed: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An image's rows of the nucleus table and of the summary."""
    # Planes without nuclei have empty tables without types: concatenated with the others
    # they would turn numbers into text.
    tables = [result.table for result in results if len(result.table)]
    nuclei = (
        pd.concat(tables, ignore_index=True)
        if tables
        else pd.DataFrame(columns=nucleus_columns(options.pixel_size, assessed))
    )
    return nuclei, pd.DataFrame([result.row for result in results])


def _remove_partial_files(run, names: Iterable[dict[str, str]]) -> None:
    """Remove what a killed run left half-written: the temporary files of its outputs
    (see :func:`unet_tf.files.atomic_path`) and of its record."""
    outputs = {"nuclei.csv", "summary.csv"}
    stems = set()
    for image in names:
        outputs.update(image.values())
        stems.add(image["overlay"].removesuffix(".png") + "_p")
    for path, target in files.partial_files(run.output_dir):
        if target in outputs or target.startswith(tuple(stems)):
            path.unlink(missing_ok=True)
    for folder in [run.folder, *run.folder.glob("*.parts")]:
        for path, _ in files.partial_files(folder):
            path.unlink(missing_ok=True)


def planned_outputs(
    paths: Sequence[Path], output_dir: Path, label_format: str, extras: Sequence[str] = ()
) -> list[Path]:
    """Every file a run over ``paths`` would write (the per-plane overlays of a stack that
    exist already included: how many planes a file holds is known only once it is read)."""
    names = output_names(paths, label_format, extras)
    per_image = [output_dir / name for outputs in names.values() for name in outputs.values()]
    planes = [
        found
        for outputs in names.values()
        for found in sorted(output_dir.glob(outputs["overlay"].removesuffix(".png") + "_p*.png"))
    ]
    return [*per_image, *planes, output_dir / "nuclei.csv", output_dir / "summary.csv"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``predict`` that no other command has (see :mod:`unet_tf.cli`)."""
    parser.add_argument("inputs", nargs="+", help="image files (PNG, TIFF, JPEG) or folders")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--pixel-size", type=float, help="micrometres per pixel; adds areas in square micrometres"
    )
    parser.add_argument("--format", choices=("tif", "png"), default="tif", dest="label_format")
    parser.add_argument("--recursive", action="store_true", help="also look in subfolders")
    parser.add_argument(
        "--rois", action="store_true", help="also write <name>_rois.zip: ImageJ ROIs for Fiji"
    )
    parser.add_argument(
        "--geojson", action="store_true", help="also write <name>.geojson: polygons for QuPath"
    )
    parser.add_argument(
        "--block-size",
        type=int,
        help="segment images larger than this in blocks of this side, with bounded memory "
        "(default: 2048 for images of more than 4096x4096 pixels; 0: never)",
    )
    stack = parser.add_argument_group("stacks and channels (TIFF files with Z, T or C axes)")
    stack.add_argument(
        "--channel", type=int, help="the channel holding the nuclei, from 0 (needed with several)"
    )
    choice = stack.add_mutually_exclusive_group()
    choice.add_argument("--plane", type=int, help="segment only this plane of a stack, from 0")
    choice.add_argument(
        "--max-projection", action="store_true", help="segment the maximum projection of a stack"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run into the same output folder: the images it finished are "
        "kept, the others predicted (same model, settings and options only)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unet_tf predict ...`` with ``argv`` (see :mod:`unet_tf.cli`)."""
    from unet_tf import cli

    return cli.main(["predict", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    """Run ``predict``; returns 0 on success, 1 if inputs were skipped, 2 on bad arguments,
    and 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) when stopped, saying how to continue."""
    with interrupt.stop_on_signals():
        try:
            return _run(args)
        except interrupt.Stopped as stop:
            if hasattr(stop, "finished"):
                print(
                    f"stopped by {stop.name}: {stop.finished} of {stop.total} images done, "
                    f"their rows in {args.output}/nuclei.csv and summary.csv; the same "
                    "command with --resume does the rest",
                    file=sys.stderr,
                )
            else:
                print(f"stopped by {stop.name} before any image was done", file=sys.stderr)
            return stop.exit_status


def _run(args: argparse.Namespace) -> int:
    from unet_tf import cli, inference, quality

    try:
        options = PredictOptions(
            pixel_size=args.pixel_size,
            label_format=args.label_format,
            channel=args.channel,
            plane=args.plane,
            max_projection=args.max_projection,
            extras=tuple(name for name in EXTRAS if getattr(args, name)),
            block_size=args.block_size,
        )
        if args.resume and args.overwrite:
            raise ValueError("--resume and --overwrite exclude each other")
        if args.output.exists() and not args.output.is_dir():
            raise ValueError(f"{args.output}: is a file, not a folder; choose another -o")
        paths, passed_over = find_inputs(args.inputs, recursive=args.recursive)
        _check_existing_outputs(paths, args, options)
        net, settings, tuned = load_model_and_settings(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not tuned:
        print(
            f"note: {inference.settings_path(args.model).name} not found; using untuned "
            f"settings {settings['postprocess']}",
            file=sys.stderr,
        )
    cli.apply_inference_options(settings, args)
    try:
        inference.check_tile_size(net, settings["tile_size"])
    except ValueError as error:
        print(f"error: the tile size does not suit this model: {error}", file=sys.stderr)
        return 2
    try:
        args.output.mkdir(parents=True, exist_ok=True)
        if not os.access(args.output, os.W_OK):
            raise PermissionError(f"{args.output}: the folder is not writable")
    except OSError as error:
        print(f"error: cannot write the outputs into {args.output} ({error})", file=sys.stderr)
        return 2
    estimate = _quality_estimate(args.model, settings["tta"])
    # What the outputs are made with: a run continues only with the same.
    identity = {
        "model_sha256": journal.file_checksum(args.model),
        "settings": settings,
        "options": asdict(options),
        "quality_sha256": journal.file_checksum(quality.quality_path(args.model))
        if estimate
        else None,
    }
    try:
        record = journal.Journal.start(args.output, identity, resume=args.resume)
        outcome = predict_images(
            net, paths, record, settings, options, progress=not args.quiet, estimate=estimate
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _report(outcome, passed_over, len(paths) + len(passed_over), args.output)


def _quality_estimate(model_path: Path, tta: bool):
    """The quality estimate beside the model, or None, saying what that means."""
    from unet_tf import quality

    path = quality.quality_path(model_path)
    try:
        estimate = quality.QualityModel.load(path)
    except FileNotFoundError:
        print(
            f"note: {path.name} not found, so no confidence, expected_dsb or reliable columns "
            "(benchmarks/quality_check.py fits one for a model)",
            file=sys.stderr,
        )
        return None
    except ValueError as error:
        print(f"note: {error}; no quality columns", file=sys.stderr)
        return None
    if not tta:
        print(
            "note: without TTA the quality estimate goes without the disagreement of the views",
            file=sys.stderr,
        )
    return estimate


def _check_existing_outputs(paths, args, options) -> None:
    """Refuse to overwrite outputs unless asked to, or to continue outputs without a record.

    Raises
    ------
    ValueError
        If outputs exist without ``--overwrite`` or ``--resume``, or with ``--resume`` but
        without the record of the run that wrote them.
    """
    planned = planned_outputs(paths, args.output, options.label_format, options.extras)
    existing = [path for path in [*planned, args.output / journal.FOLDER] if path.exists()]
    if not existing or args.overwrite:
        return
    shown = ", ".join(str(path) for path in existing[:3]) + (" ..." if len(existing) > 3 else "")
    if not args.resume:
        raise ValueError(
            f"{len(existing)} outputs exist already ({shown}); use --resume to continue the run "
            "that wrote them, --overwrite to replace them, or another --output"
        )
    if not (args.output / journal.FOLDER / "run.json").is_file():
        raise ValueError(
            f"{args.output}: outputs exist ({shown}) but no record of the run that wrote them "
            f"({journal.FOLDER}/run.json), so it cannot be continued; use --overwrite"
        )


def _report(outcome: Outcome, passed_over, inputs: int, output: Path) -> int:
    """Say what was done and skipped; the exit status (1 if any input was skipped)."""
    earlier = f" ({outcome.reused} of them by the run continued)" if outcome.reused else ""
    print(f"{len(outcome.finished)} images{earlier}, {outcome.nuclei} nuclei -> {output}")
    summary_path = output / "summary.csv"
    summary = pd.read_csv(summary_path) if summary_path.stat().st_size > 1 else pd.DataFrame()
    # "False" only: images segmented in blocks are not assessed (an empty cell).
    doubtful = summary[summary.reliable.astype(str) == "False"] if "reliable" in summary else []
    if len(doubtful):
        names = [
            f"{name}" + (f" (plane {plane})" if (summary.image == name).sum() > 1 else "")
            for name, plane in zip(doubtful.image, doubtful.plane, strict=True)
        ]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        print(
            f"{len(names)} of {len(summary)} images look unreliable (expected DSB below the "
            f"threshold; check them by eye): {shown}"
        )
    skipped = [*passed_over, *outcome.skipped]
    for _, reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} of {inputs} images skipped", file=sys.stderr)
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
