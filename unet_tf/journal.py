"""The record a ``predict`` run keeps in its output folder, so that a stopped run continues.

Beside its outputs a run keeps a hidden folder, ``.unet-tf-predict``, holding

- ``run.json``: what the outputs are made with (the model file's checksum, the inference
  settings, the options) and, for every finished image, its input and its output files
  with their sizes;
- ``<name>.nuclei.csv`` and ``<name>.summary.csv``: each finished image's rows of the two
  tables;
- ``<name>.parts/``: the planes of a stack, or the blocks of a large image, finished so far.

An image counts as finished only once ``run.json`` says so, and it says so only after
every file of the image is written (each atomically). A run killed at any moment therefore
leaves each image finished or not done, never half of it; ``nuclei.csv`` and
``summary.csv`` are put together from the finished images' rows, in the order of the
inputs, exactly as an uninterrupted run writes them.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from unet_tf import files

FOLDER = ".unet-tf-predict"
VERSION = 1
CSV_FORMAT = {"index": False, "float_format": "%.6g"}


def file_checksum(path: str | Path) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flat(mapping: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def differences(before: dict, now: dict) -> list[str]:
    """What differs between two records, one ``name: before -> now`` per value."""
    before, now = _flat(before), _flat(now)
    return [
        f"{key}: {before.get(key, '(none)')} -> {now.get(key, '(none)')}"
        for key in sorted(before.keys() | now.keys())
        if before.get(key) != now.get(key)
    ]


def _as_json(value):
    """``value`` as it reads back from JSON, so that a fresh record compares equal to one
    read from ``run.json`` (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class Parts:
    """Finished pieces (planes, blocks) of the image in progress: numpy arrays by name."""

    def __init__(self, folder: Path, prefix: str = ""):
        self.folder = folder
        self.prefix = prefix

    def within(self, name: str) -> "Parts":
        """The pieces of a piece (the blocks of one plane of a stack)."""
        return Parts(self.folder, f"{self.prefix}{name}-")

    def _path(self, name: str) -> Path:
        return self.folder / f"{self.prefix}{name}.npz"

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The arrays saved under ``name``, or None if that piece is not finished."""
        path = self._path(name)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            return {key: saved[key] for key in saved.files}

    def save(self, name: str, **arrays) -> None:
        """Save a finished piece, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with files.atomic_path(self._path(name)) as partial:
            with open(partial, "wb") as stream:
                np.savez_compressed(stream, **arrays)


def table_arrays(table: pd.DataFrame, prefix: str) -> dict[str, np.ndarray]:
    """A table as arrays for :meth:`Parts.save`: one per column, its order kept."""
    arrays = {
        f"{prefix}{index:03d}:{name}": table[name].to_numpy()
        for index, name in enumerate(table.columns)
    }
    return {
        key: (value.astype(str) if value.dtype == object else value)
        for key, value in arrays.items()
    }


def arrays_table(arrays: dict[str, np.ndarray], prefix: str) -> pd.DataFrame:
    """The table :func:`table_arrays` saved."""
    columns = sorted(key for key in arrays if key.startswith(prefix))
    return pd.DataFrame({key.partition(":")[2]: arrays[key] for key in columns})


class Journal:
    """The record of one run into ``output_dir`` (see the module's description)."""

    def __init__(self, output_dir: Path, identity: dict, finished: dict):
        self.output_dir = Path(output_dir)
        self.folder = self.output_dir / FOLDER
        self.identity = identity
        self.finished = finished

    @classmethod
    def start(cls, output_dir: str | Path, identity: dict, resume: bool = False) -> "Journal":
        """Start a run into ``output_dir``, or with ``resume`` continue the one there.

        ``identity`` is what the outputs are made with; a run continues only with the same.

        Raises
        ------
        ValueError
            With ``resume``, if the run in ``output_dir`` was made with another model,
            settings or options (each difference is named), or by another version.
        """
        output_dir = Path(output_dir)
        identity = _as_json(identity)
        record = output_dir / FOLDER / "run.json"
        if resume and record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("version") != VERSION:
                raise ValueError(
                    f"{record}: written by another version of unet-tf (record version "
                    f"{saved.get('version')}, this one reads {VERSION}); use --overwrite"
                )
            changed = differences(saved["identity"], identity)
            if changed:
                raise ValueError(
                    f"{output_dir}: its outputs were made with other settings, so they cannot "
                    f"be continued ({'; '.join(changed)}); use the same ones, or --overwrite "
                    "or another --output to start again"
                )
            journal = cls(output_dir, identity, saved["finished"])
        else:
            shutil.rmtree(output_dir / FOLDER, ignore_errors=True)
            journal = cls(output_dir, identity, {})
            journal._save()
        return journal

    def _save(self) -> None:
        files.write_json(
            self.folder / "run.json",
            {"version": VERSION, "identity": self.identity, "finished": self.finished},
        )

    def is_finished(self, name: str, source: Path) -> bool:
        """Whether the image ``source`` was finished under ``name``, all of its outputs
        still there as they were written."""
        entry = self.finished.get(name)
        if not entry or entry["input"] != str(Path(source).resolve()):
            return False
        fragments = [self.folder / f"{name}.nuclei.csv", self.folder / f"{name}.summary.csv"]
        return all(path.is_file() for path in fragments) and all(
            (self.output_dir / output).is_file()
            and (self.output_dir / output).stat().st_size == size
            for output, size in entry["outputs"].items()
        )

    def parts(self, name: str) -> Parts:
        """Where the finished pieces of the image ``name`` are kept while it is in progress."""
        return Parts(self.folder / f"{name}.parts")

    def finish(
        self,
        name: str,
        source: Path,
        outputs: list[Path],
        nuclei: pd.DataFrame,
        summary: pd.DataFrame,
    ) -> None:
        """Record an image as finished, once all of its ``outputs`` are written: its rows of
        the tables first, then the record (its pieces in progress are dropped)."""
        for table, kind in ((nuclei, "nuclei"), (summary, "summary")):
            with files.atomic_path(self.folder / f"{name}.{kind}.csv") as partial:
                table.to_csv(partial, **CSV_FORMAT)
        self.finished[name] = {
            "input": str(Path(source).resolve()),
            "outputs": {path.name: path.stat().st_size for path in outputs},
        }
        self._save()
        shutil.rmtree(self.folder / f"{name}.parts", ignore_errors=True)

    def write_tables(self, names: list[str], nucleus_columns: list[str], summary_columns):
        """Write ``nuclei.csv`` and ``summary.csv`` of the finished images among ``names``, in
        that order; returns the number of nuclei. The header comes from the columns given
        when no image is finished."""
        done = [name for name in names if name in self.finished]
        nuclei = 0
        for kind, columns in (("nuclei", nucleus_columns), ("summary", summary_columns)):
            header = ",".join(columns) + "\n"
            rows = []
            for name in done:
                lines = (self.folder / f"{name}.{kind}.csv").read_text().splitlines(True)
                header = lines[0] if lines else header
                rows += lines[1:]
            with files.atomic_path(self.output_dir / f"{kind}.csv") as partial:
                partial.write_text(header + "".join(rows))
            if kind == "nuclei":
                nuclei = len(rows)
        return nuclei
