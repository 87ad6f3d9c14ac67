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

import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# TensorFlow is imported only when a model is loaded, so that --help and argument errors
# answer at once.
from unet_tf import files, interrupt, journal
from unet_tf.measure import measure, nucleus_columns
from unet_tf.model_input import intensity_channel, to_model_input

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
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
        (see :func:`unet_tf.decoding.read_stack`).
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
    from unet_tf import decoding, outlines

    labels_path = output_dir / names["labels"]
    written = [labels_path]
    if stack.is_stack:
        decoding.write_label_stack(
            labels_path, [r.labels for r in results], stack.axes, stack.shape
        )
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

    from unet_tf import decoding

    names = output_names(paths, options.label_format, options.extras)
    keys = {path: names[path]["overlay"].removesuffix("_overlay.png") for path in paths}
    _remove_partial_files(run, names.values())
    todo = [path for path in paths if not run.is_finished(keys[path], path)]
    skipped = []
    try:
        with tqdm(todo, desc="images", unit="image", disable=not progress, file=sys.stderr) as bar:
            for path in bar:
                try:
                    stack = decoding.read_stack(
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
