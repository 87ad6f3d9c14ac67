"""Large images: peak memory, time and nucleus count of ``predict`` on synthetic mosaics.

Draws a square 8-bit image of bright, non-touching discs of 5-8 pixels radius (nuclei of
the training size) on a dim, noisy background, writes it as a TIFF, and runs
``python -m unet_tf predict`` on it in a child process, as a user would, sampling the
child's resident memory every 0.2 s. The nuclei found are compared with the discs drawn
(count, and how many discs hold exactly one nucleus), including the discs on block seams.
Writes ``reports/large_image.json`` and prints a Markdown table::

    .venv/bin/python benchmarks/large_image.py [--sizes 6000 16000] [--tta] [--model M]

``--quick`` is a smoke run (the tests use it): one 1200-pixel image cut into 512-pixel
blocks (``predict --block-size``), so that it goes the large-image way, seams and all, in
seconds; into ``reports/large_image-quick.json``.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile

from unet_tf import config, files, large

# One disc per 30-pixel cell: 2048-pixel blocks are not a multiple of it, so discs lie across
# every block seam.
SPACING = 30
QUICK_SIZE, QUICK_BLOCK = 1200, 512


def draw(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The image and the disc centres: one disc per ``SPACING`` cell, jittered, row by row
    so that memory stays at the image's own size."""
    rng = np.random.default_rng(seed)
    cells = size // SPACING
    image = np.empty((size, size), np.uint8)
    centres = []
    offsets = np.arange(-8, 9)
    stamp_y, stamp_x = np.meshgrid(offsets, offsets, indexing="ij")
    for row in range(cells + 1):
        top = row * SPACING
        band = rng.normal(20, 4, (min(SPACING, size - top), size)).clip(0, 255)
        if band.shape[0] == 0:
            break
        for col in range(cells):
            if top + SPACING > size:
                break
            y = 11 + int(rng.integers(0, SPACING - 22 + 1))
            x = col * SPACING + 11 + int(rng.integers(0, SPACING - 22 + 1))
            radius = rng.uniform(5, 8)
            inside = stamp_y**2 + stamp_x**2 <= radius**2
            ys, xs = y + stamp_y[inside], x + stamp_x[inside]
            band[ys, xs] = rng.uniform(150, 230)
            centres.append((top + y, x))
        image[top : top + band.shape[0]] = band.astype(np.uint8)
    return image, np.asarray(centres)


def run(
    size: int, tta: bool, workdir: Path, model: Path | None = None, block_size: int | None = None
) -> dict:
    """Draw a ``size`` mosaic, segment it with ``predict`` in a child process (with
    ``model`` and ``block_size`` where given, else predict's defaults) and return its row."""
    image, centres = draw(size)
    path = workdir / f"mosaic_{size}.tif"
    tifffile.imwrite(path, image, tile=(512, 512), compression="zlib")
    del image
    output = workdir / f"out_{size}"
    command = [
        sys.executable,
        "-m",
        "unet_tf",
        "predict",
        str(path),
        "-o",
        str(output),
        "--overwrite",
        "--quiet",
    ]
    if not tta:
        command.append("--no-tta")
    if model is not None:
        command += ["--model", str(model)]
    if block_size is not None:
        command += ["--block-size", str(block_size)]
    started = time.monotonic()
    # The child's messages go to a file: a pipe nobody reads while polling could fill up.
    log = workdir / f"predict_{size}.log"
    with log.open("w") as messages:
        child = subprocess.Popen(command, stdout=messages, stderr=subprocess.STDOUT)
        process, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
    minutes = (time.monotonic() - started) / 60
    if child.returncode != 0:
        raise RuntimeError(f"predict failed ({child.returncode}): {log.read_text()[-2000:]}")
    labels = tifffile.imread(output / f"mosaic_{size}_labels.tif")
    found = labels[centres[:, 0], centres[:, 1]]
    # A disc counts as found once when its centre lies in a nucleus that no other disc's
    # centre lies in.
    values, counts = np.unique(found[found > 0], return_counts=True)
    single = int(np.isin(found, values[counts == 1]).sum())
    spans = large.spans(size, block_size or large.BLOCK_SIZE, 128)
    seams = [start for start, _, _, _ in spans[1:]]
    near_seam = np.zeros(len(centres), bool)
    for seam in seams:
        near_seam |= (np.abs(centres[:, 0] - seam) <= 8) | (np.abs(centres[:, 1] - seam) <= 8)
    seam_ok = int(np.isin(found[near_seam], values[counts == 1]).sum())
    return {
        "size": size,
        "tta": tta,
        "discs": len(centres),
        "nuclei": int(labels.max()),
        "discs_found_once": single,
        "discs_on_seams": int(near_seam.sum()),
        "seam_discs_found_once": seam_ok,
        "minutes": round(minutes, 2),
        "peak_gb": round(peak / 1e9, 2),
        "labels_mb": round((output / f"mosaic_{size}_labels.tif").stat().st_size / 1e6, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", help="default 6000 16000")
    parser.add_argument("--tta", action="store_true", help="with test-time augmentation")
    parser.add_argument("--model", type=Path, help="the model (default: predict's)")
    parser.add_argument("--block-size", type=int, help="predict's --block-size (default: its)")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_SIZE} pixels, {QUICK_BLOCK} blocks"
    )
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = [QUICK_SIZE] if args.quick else [6000, 16000]
    if args.block_size is None and args.quick:
        args.block_size = QUICK_BLOCK
    rows = []
    with tempfile.TemporaryDirectory(prefix="large-image.") as scratch:
        for size in args.sizes:
            rows.append(run(size, args.tta, Path(scratch), args.model, args.block_size))
            print(rows[-1], flush=True)
    name = "large_image-quick.json" if args.quick else "large_image.json"
    files.write_json(config.REPORTS_DIR / name, {"rows": rows})
    print(
        "| side | TTA | discs | nuclei | found once | on seams (found once) | minutes | peak GB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {'yes' if r['tta'] else 'no'} | {r['discs']:,} | {r['nuclei']:,} | "
            f"{r['discs_found_once']:,} | {r['discs_on_seams']:,} ({r['seam_discs_found_once']:,}) "
            f"| {r['minutes']:.1f} | {r['peak_gb']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
