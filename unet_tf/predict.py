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
"""

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# TensorFlow is imported only when a model is loaded, so that --help and argument errors
# answer at once.
from unet_tf import data, files, postprocess

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
NUCLEUS_COLUMNS = [
    "image",
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
    "height",
    "width",
    "nuclei",
    "coverage",
    "mean_area",
    "median_area",
    "seconds",
]


def nucleus_columns(pixel_size: float | None) -> list[str]:
    """The columns of ``nuclei.csv``: micrometre ones too when a pixel size is given."""
    return NUCLEUS_COLUMNS + (MICROMETRE_COLUMNS if pixel_size else [])


def find_images(inputs: Iterable[str | Path], recursive: bool = False) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders listed for image suffixes.

    Files given by name are kept whatever their suffix, so that one that is not an image is
    reported rather than silently left out. In folders, hidden files are skipped.

    Raises
    ------
    FileNotFoundError
        If an input does not exist.
    ValueError
        If no image is found.
    """
    inputs = list(inputs)
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_file():
            found.append(item)
        elif item.is_dir():
            listing = item.rglob("*") if recursive else item.iterdir()
            found += sorted(
                path
                for path in listing
                if path.is_file()
                and path.suffix.lower() in IMAGE_SUFFIXES
                and not path.name.startswith(".")
            )
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not found:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        raise ValueError(f"no image files ({suffixes}) in {[str(item) for item in inputs]}")
    return list(dict.fromkeys(found))


def output_names(paths: Sequence[Path], label_format: str = "tif") -> dict[Path, dict[str, str]]:
    """File names of each image's outputs; two inputs with the same name are disambiguated.

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
    return {
        path: {"labels": f"{stem}_labels.{label_format}", "overlay": f"{stem}_overlay.png"}
        for path, stem in stems.items()
    }


def to_model_input(pixels: np.ndarray, path: Path) -> np.ndarray:
    """Float32 ``(H, W, 3)`` model input in [0, 1] from raw pixels of any type.

    8-bit images are scaled as in training (divided by 255). Images of other types (16-bit
    microscopy, float) rarely use their full range, so they are scaled to put their 99.9th
    percentile at 1: a 12-bit image in a 16-bit file then looks to the model as it would
    have as an 8-bit export.
    """
    image = data.pixels_to_image(pixels, path, channels=3)
    if pixels.dtype != np.uint8:
        top = float(np.percentile(image, 99.9))
        if top > 0:
            image = np.clip(image / top, 0.0, 1.0)
    return image


def intensity_channel(pixels: np.ndarray) -> np.ndarray:
    """The raw intensity for measurements: the mean over colour channels, alpha dropped."""
    pixels = np.asarray(pixels, np.float64)
    if pixels.ndim == 2:
        return pixels
    if pixels.shape[-1] in (2, 4):
        pixels = pixels[..., :-1]
    return pixels.mean(axis=-1)


def measure(
    labels: np.ndarray, intensity: np.ndarray, image_name: str, pixel_size: float | None = None
) -> pd.DataFrame:
    """A row per nucleus of ``labels`` with the columns of ``NUCLEUS_COLUMNS``.

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
    table["area"] = table["area"].astype(int)
    if pixel_size:
        table["area_um2"] = table["area"] * pixel_size**2
        table["perimeter_um"] = table["perimeter"] * pixel_size
        table["equivalent_diameter_um"] = table["equivalent_diameter"] * pixel_size
    return table[columns]


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

            values = labels.astype(np.uint32 if wide else np.uint16)
            tifffile.imwrite(partial, values, compression="zlib")
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
    from unet_tf import inference, training

    net = training.load_model(model_path)
    try:
        return net, inference.read_settings(model_path), True
    except FileNotFoundError:
        settings = dict(inference.FALLBACK_SETTINGS)
        if net.output_shape[-1] >= 2:
            settings["postprocess"] = {
                "method": "watershed_border",
                "min_area": postprocess.MIN_AREA,
            }
        return net, settings, False


def predict_images(
    net,
    paths: Sequence[Path],
    output_dir: Path,
    settings: dict,
    pixel_size: float | None = None,
    label_format: str = "tif",
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[Path, str]]]:
    """Segment and measure each image, writing its outputs; returns the tables and skips.

    Returns ``(nuclei, summary, skipped)``, ``skipped`` a list of ``(path, reason)``.
    """
    from tqdm.auto import tqdm

    from unet_tf import inference, plots

    names = output_names(paths, label_format)
    nuclei, summary, skipped = [], [], []
    for path in tqdm(paths, desc="images", unit="image", disable=not progress, file=sys.stderr):
        started = time.monotonic()
        try:
            pixels = data.read_pixels(path)
            image = to_model_input(pixels, path)
        except (OSError, ValueError) as error:
            skipped.append((path, str(error)))
            continue
        try:
            labels = inference.segment(net, image, settings)
        except (ValueError, MemoryError) as error:
            skipped.append((path, f"{path}: prediction failed ({type(error).__name__}: {error})"))
            continue
        write_labels(output_dir / names[path]["labels"], labels)
        overlay = plots.overlay(image, prediction=labels, as_uint8=True)
        write_png(output_dir / names[path]["overlay"], overlay)
        table = measure(labels, intensity_channel(pixels), path.name, pixel_size)
        nuclei.append(table)
        areas = table["area"].to_numpy()
        row = {
            "image": path.name,
            "height": labels.shape[0],
            "width": labels.shape[1],
            "nuclei": int(labels.max()),
            "coverage": float((labels > 0).mean()),
            "mean_area": float(areas.mean()) if areas.size else 0.0,
            "median_area": float(np.median(areas)) if areas.size else 0.0,
        }
        if pixel_size:
            row["mean_area_um2"] = row["mean_area"] * pixel_size**2
            row["median_area_um2"] = row["median_area"] * pixel_size**2
        row["seconds"] = round(time.monotonic() - started, 2)
        summary.append(row)
    nuclei_table = (
        pd.concat(nuclei, ignore_index=True)
        if nuclei
        else pd.DataFrame(columns=nucleus_columns(pixel_size))
    )
    return nuclei_table, pd.DataFrame(summary), skipped


def planned_outputs(paths: Sequence[Path], output_dir: Path, label_format: str) -> list[Path]:
    """Every file a run over ``paths`` would write."""
    names = output_names(paths, label_format)
    per_image = [output_dir / name for outputs in names.values() for name in outputs.values()]
    return [*per_image, output_dir / "nuclei.csv", output_dir / "summary.csv"]


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``predict`` that no other command has (see :mod:`unet_tf.cli`)."""
    parser.add_argument("inputs", nargs="+", help="image files (PNG, TIFF, JPEG) or folders")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--pixel-size", type=float, help="micrometres per pixel; adds areas in square micrometres"
    )
    parser.add_argument("--format", choices=("tif", "png"), default="tif", dest="label_format")
    parser.add_argument("--recursive", action="store_true", help="also look in subfolders")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m unet_tf predict ...`` with ``argv`` (see :mod:`unet_tf.cli`)."""
    from unet_tf import cli

    return cli.main(["predict", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace) -> int:
    """Run ``predict``; returns 0 on success, 1 if images were skipped, 2 on bad arguments."""
    if args.pixel_size is not None and not args.pixel_size > 0:
        print(f"error: --pixel-size must be positive, got {args.pixel_size}", file=sys.stderr)
        return 2
    try:
        paths = find_images(args.inputs, recursive=args.recursive)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    existing = [p for p in planned_outputs(paths, args.output, args.label_format) if p.exists()]
    if existing and not args.overwrite:
        shown = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        print(
            f"error: {len(existing)} outputs exist already ({shown}); "
            "use --overwrite to replace them or choose another --output",
            file=sys.stderr,
        )
        return 2
    try:
        net, settings, tuned = load_model_and_settings(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from unet_tf import inference

    if not tuned:
        print(
            f"note: {inference.settings_path(args.model).name} not found; using untuned "
            f"settings {settings['postprocess']}",
            file=sys.stderr,
        )
    if args.no_tta:
        settings["tta"] = False
    if args.tile_size:
        settings["tile_size"] = args.tile_size
    try:
        inference.check_tile_size(net, settings["tile_size"])
    except ValueError as error:
        print(f"error: the tile size does not suit this model: {error}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        nuclei, summary, skipped = predict_images(
            net,
            paths,
            args.output,
            settings,
            pixel_size=args.pixel_size,
            label_format=args.label_format,
            progress=not args.quiet,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _write_csv(args.output / "nuclei.csv", nuclei)
    _write_csv(args.output / "summary.csv", summary)
    done = len(paths) - len(skipped)
    print(f"{done} images, {len(nuclei)} nuclei -> {args.output}")
    for _, reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} of {len(paths)} images skipped", file=sys.stderr)
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
