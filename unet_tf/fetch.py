"""Fill ``data/raw/`` with the DSB2018 stage 1 data (``make data``).

Each archive is taken from a local folder holding the Kaggle zips when it is there, and
downloaded from the official BBBC038 site otherwise. Archives are checked (every member's
CRC) before anything is unpacked, and each one is unpacked into a temporary folder that is
renamed into place only when complete, so an interrupted run never leaves a half-filled
``data/raw``. A second run finds the folders in place and does nothing.

This module uses the standard library only, so that it runs before the virtual
environment exists::

    python -m unet_tf.fetch                       # defaults from unet_tf.config
    python -m unet_tf.fetch --source /path/to/zips --raw-dir data/raw
    python -m unet_tf.fetch --dataset lung_ct     # the lung CT slices (own-data example)
    python -m unet_tf.fetch --profile lung_ct     # what a make report profile needs
"""

import argparse
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from unet_tf import config

ARCHIVES = ("stage1_train", "stage1_test")
# Copied beside the unpacked folders when the source has them; the official site has none.
EXTRA_FILES = ("stage1_sample_submission.csv",)
PARTIAL_PREFIX = ".partial-"


class DataUnavailableError(FileNotFoundError):
    """Raised when an archive is neither in the local source nor downloadable."""


def _log(message: str) -> None:
    print(f"[unet_tf.fetch] {message}", file=sys.stderr, flush=True)


def check_archive(path: Path) -> int:
    """Check that ``path`` is a readable zip whose members all pass their CRC.

    Parameters
    ----------
    path : Path
        The zip file.

    Returns
    -------
    int
        The number of members.

    Raises
    ------
    ValueError
        If the file is not a zip, a member fails its CRC check, or a member would be
        written outside the folder it is unpacked to.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable zip archive ({error})") from error
    if bad_member is not None:
        raise ValueError(f"{path}: member {bad_member!r} fails its CRC check; the file is corrupt")
    for name in names:
        # Refuse absolute paths and '..' so that unpacking cannot write outside data/raw.
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or ".." in parts:
            raise ValueError(f"{path}: member {name!r} points outside the archive folder")
    return len(names)


def download(url: str, destination: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` through a ``.part`` file renamed when complete.

    Raises
    ------
    OSError
        If the server cannot be reached, answers with an error, or sends fewer bytes than
        it announced.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    _log(f"downloading {url}")
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
        expected = response.headers.get("Content-Length")
        received = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            received += len(chunk)
    if expected is not None and received != int(expected):
        partial.unlink(missing_ok=True)
        raise OSError(f"{url}: received {received} of {expected} bytes")
    partial.replace(destination)
    _log(f"downloaded {received / 1e6:.1f} MB in {time.monotonic() - started:.0f} s")
    return destination


def locate_archive(name: str, source: Path, url: str, download_dir: Path) -> Path:
    """Return a checked local path of ``<name>.zip``: from ``source``, a download cache, or ``url``.

    Raises
    ------
    DataUnavailableError
        If the zip is in neither place; the message names both ways to get it.
    """
    filename = f"{name}.zip"
    for candidate in (source / filename, download_dir / filename):
        if candidate.is_file():
            return candidate
    target = download_dir / filename
    full_url = url.rstrip("/") + "/" + filename
    try:
        download(full_url, target)
    except (OSError, urllib.error.URLError, ValueError) as error:
        raise DataUnavailableError(
            f"{filename} is not in the local source folder {source} and downloading "
            f"{full_url} failed ({error}). Either put the Kaggle zips in a folder and set "
            f"UNET_TF_DSB2018_SOURCE to it, or connect to the internet so that the official "
            f"BBBC038 files can be downloaded (UNET_TF_DSB2018_URL overrides the address)."
        ) from error
    return target


def _remove_partials(raw_dir: Path) -> None:
    for leftover in raw_dir.glob(PARTIAL_PREFIX + "*"):
        _log(f"removing {leftover.name}, left by an interrupted run")
        shutil.rmtree(leftover, ignore_errors=True)


def unpack(archive_path: Path, target: Path, rename: dict[str, str] | None = None) -> int:
    """Unpack ``archive_path`` into ``target`` atomically; return the number of image folders.

    The archive is extracted into a hidden temporary folder beside ``target`` that is renamed
    to ``target`` only once everything is written. A zip that wraps its content in a single
    folder named like ``target`` is unwrapped. ``rename`` maps top-level folders of the
    archive to the names they get (``2d_images`` to ``images``, say).
    """
    check_archive(archive_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX + target.name + "-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive_path) as archive:
            archive.extractall(staging)
        content = staging
        entries = list(staging.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name == target.name:
            content = entries[0]
        for old, new in (rename or {}).items():
            if not (content / old).is_dir():
                raise ValueError(f"{archive_path}: no folder {old}/ in the archive")
            (content / old).rename(content / new)
        content.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sum(1 for entry in target.iterdir() if entry.is_dir())


def fetch(
    raw_dir: Path | None = None,
    source: Path | None = None,
    url: str | None = None,
    download_dir: Path | None = None,
) -> dict[str, int]:
    """Make sure ``raw_dir`` holds ``stage1_train/`` and ``stage1_test/``.

    Each argument defaults to its path in :mod:`unet_tf.config`, read when called, so the
    environment overrides set after import count.

    Returns
    -------
    dict
        The number of image folders per archive name (folders already present included).
    """
    raw_dir = Path(raw_dir or config.RAW_DIR)
    source = source or config.DSB2018_SOURCE
    url = url or config.DSB2018_URL
    download_dir = download_dir or config.EXTERNAL_DIR
    raw_dir.mkdir(parents=True, exist_ok=True)
    _remove_partials(raw_dir)
    counts = {}
    for name in ARCHIVES:
        target = raw_dir / name
        if target.is_dir():
            counts[name] = sum(1 for entry in target.iterdir() if entry.is_dir())
            _log(f"{target} is in place ({counts[name]} images); nothing to do")
            continue
        archive_path = locate_archive(name, Path(source), url, Path(download_dir))
        _log(f"checking and unpacking {archive_path}")
        counts[name] = unpack(archive_path, target)
        _log(f"{target}: {counts[name]} images")
    for filename in EXTRA_FILES:
        origin, copy = Path(source) / filename, raw_dir / filename
        if origin.is_file() and not copy.is_file():
            shutil.copyfile(origin, copy)
    return counts


def fetch_lung_ct(target: Path | None = None, source: Path | None = None) -> int:
    """Make sure ``target`` holds the lung CT slices as a folder dataset; return their count.

    ``lung_ct.zip`` (``2d_images/`` and ``2d_masks/``, see its README) is unpacked from the
    ``source`` folder, its folders renamed to ``images/`` and ``masks/``. It has no public
    download without a Kaggle login, so a missing zip is an error saying where to put it.

    Raises
    ------
    DataUnavailableError
        If ``source`` has no ``lung_ct.zip``.
    """
    target = Path(target or config.LUNG_CT_DIR)
    source = Path(source or config.LUNG_CT_SOURCE)
    in_place = (target / "images").is_dir()
    if not in_place:
        _unpack_lung_ct(source / "lung_ct.zip", target)
    count = sum(1 for entry in (target / "images").iterdir() if entry.is_file())
    _log(
        f"{target} is in place ({count} images); nothing to do"
        if in_place
        else f"{target}: {count} images"
    )
    return count


def _unpack_lung_ct(archive_path: Path, target: Path) -> None:
    if not archive_path.is_file():
        raise DataUnavailableError(
            f"{archive_path}: no such file. Put lung_ct.zip (Kaggle's \"Finding and Measuring "
            'Lungs in CT Data", 2d_images/ and 2d_masks/) in a folder and set '
            "UNET_TF_LUNG_CT_SOURCE to it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_partials(target.parent)
    _log(f"checking and unpacking {archive_path}")
    unpack(archive_path, target, rename={"2d_images": "images", "2d_masks": "masks"})


DATASETS = ("dsb2018", "lung_ct")


def profile_datasets(profile: str) -> list[str]:
    """The datasets a ``make report`` profile uses (its ``dataset`` parameter; DSB2018 if none).

    Raises
    ------
    FileNotFoundError
        If there is no such profile; the message lists the profiles there are.
    """
    # report's top-level imports are the standard library's and config's, as here.
    from unet_tf import report

    return [report.load_profile(profile)["parameters"].get("dataset", "dsb2018")]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", type=Path, default=config.RAW_DIR)
    parser.add_argument("--source", type=Path, default=config.DSB2018_SOURCE)
    parser.add_argument("--url", default=config.DSB2018_URL)
    parser.add_argument("--download-dir", type=Path, default=config.EXTERNAL_DIR)
    parser.add_argument(
        "--dataset", choices=DATASETS, action="append", help="what to fetch (default: dsb2018)"
    )
    parser.add_argument("--profile", help="fetch the datasets this make report profile uses")
    args = parser.parse_args(argv)
    try:
        wanted = args.dataset or (profile_datasets(args.profile) if args.profile else ["dsb2018"])
        for name in wanted:
            if name == "lung_ct":
                fetch_lung_ct()
            elif name == "dsb2018":
                fetch(args.raw_dir, args.source, args.url, args.download_dir)
            else:
                _log(f"{name} is a folder of your own; nothing to fetch")
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"make data failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
