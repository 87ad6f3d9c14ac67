"""A self-contained Kaggle kernel for the Data Science Bowl 2018 (``make kaggle``).

``python -m unet_tf.kaggle`` writes ``build/kaggle/``:

- ``unet-tf-dsb2018.ipynb``: one notebook, generated from this repository's notebooks and the
  ``unet_tf`` source. Its first code cell writes the package into the kernel's working
  folder, so the kernel always runs the code of the commit it was built from, with no pip
  install and no internet. It then trains (``02-training``), tunes the post-processing on
  the validation split (``03-results``) and predicts the test set (``04-submission``), or,
  given ``model_dir`` (an attached dataset holding ``unet.keras`` and
  ``unet.inference.json``), only predicts.
- ``kernel-metadata.json`` for ``kaggle kernels push``: the competition as data source,
  internet off, GPU on.

At run time :func:`prepare` finds the competition data under ``input_root``: extracted
folders (``stage1_train/``) or zips (``stage1_train.zip``, unpacked into the working folder),
and the stage 2 test set (``stage2_sample_submission_final.csv`` with ``stage2_test_final``)
when it is there, else stage 1. Every image the sample submission lists is predicted.

This module uses the standard library only at import time: the kernel imports it before
the paths of :mod:`unet_tf.config` are set.
"""

import argparse
import json
import os
import sys
from pathlib import Path

COMPETITION = "data-science-bowl-2018"
KERNEL_FILE = "unet-tf-dsb2018.ipynb"
KERNEL_SLUG = "unet-tf-dsb2018"
# Newest first: the stage 2 set is the one a late submission is scored on.
STAGES = (
    ("stage2_test_final", "stage2_sample_submission_final"),
    ("stage1_test", "stage1_sample_submission"),
)
NOTEBOOKS = ("02-training", "03-results", "04-submission")
KERNEL_PARAMETERS = """input_root: str = "/kaggle/input/data-science-bowl-2018"  # competition data
output_root: str = "/kaggle/working"  # submission.csv, models and figures go here
model_dir: str = ""  # folder with unet.keras + unet.inference.json: predict only, no training
"""


def _find(root: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        candidate = root / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def locate(input_root: str | Path) -> dict:
    """Find the training set, the test set and its sample submission under ``input_root``.

    Each set may be an extracted folder or a zip; a sample submission may be ``.csv`` or
    ``.csv.zip``. Returns a dict of paths (``train``, ``test``, ``sample_submission``) and
    the ``stage`` found.

    Raises
    ------
    FileNotFoundError
        If the training set or every test set is missing; the message lists what is there.
    """
    root = Path(input_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such input folder; attach the competition data")
    present = sorted(p.name for p in root.iterdir())
    train = _find(root, "stage1_train", ("", ".zip"))
    if train is None:
        raise FileNotFoundError(f"{root}: no stage1_train folder or zip (found {present})")
    for test_stem, sample_stem in STAGES:
        test = _find(root, test_stem, ("", ".zip"))
        sample = _find(root, sample_stem, (".csv", ".csv.zip"))
        if test is not None and sample is not None:
            return {
                "train": train,
                "test": test,
                "sample_submission": sample,
                "stage": test_stem.split("_")[0],
            }
    raise FileNotFoundError(
        f"{root}: no test set with its sample submission ({STAGES}); found {present}"
    )


def prepare(input_root: str | Path, output_root: str | Path) -> dict:
    """Point :mod:`unet_tf.config` at the competition data and unpack what is zipped.

    Sets the ``UNET_TF_*`` environment variables (data and outputs under ``output_root``,
    ``submission.csv`` directly in it) before :mod:`unet_tf.config` is imported; call it
    first. Zips are checked and unpacked into ``<output_root>/data/raw`` (once: a second
    call finds them there). Returns the located paths, folders in place of zips.
    """
    output_root = Path(output_root)
    raw = output_root / "data" / "raw"
    found = locate(input_root)
    environment = {
        "UNET_TF_DATA_DIR": output_root / "data",
        "UNET_TF_MODELS_DIR": output_root / "models",
        "UNET_TF_REPORTS_DIR": output_root,
        "UNET_TF_VALIDATION_IDS": output_root / "validation_ids.txt",
    }
    os.environ.update({name: str(value) for name, value in environment.items()})
    from unet_tf import fetch  # Reads the configuration set above.

    for key in ("train", "test"):
        if found[key].suffix == ".zip":
            target = raw / found[key].name.removesuffix(".zip")
            if not target.is_dir():
                print(f"unpacking {found[key]} into {target}", flush=True)
                fetch.unpack(found[key], target)
            found[key] = target
    os.environ["UNET_TF_TRAIN_DIR"] = str(found["train"])
    os.environ["UNET_TF_TEST_DIR"] = str(found["test"])
    os.environ["UNET_TF_SAMPLE_SUBMISSION"] = str(found["sample_submission"])
    # A cell run twice finds the configuration imported already: read it again.
    import importlib

    from unet_tf import config

    importlib.reload(config)
    return found


def write_validation_ids(path: str | Path, committed: list[str], train_dir: str | Path) -> list:
    """Write the validation split the kernel uses: the repository's, if every id is there.

    Kaggle's stage 1 training set holds all of the committed ids. Elsewhere (a subset, a
    test tree) a split of the same fraction is drawn from the images present, with the
    repository's seed, and a note says so.
    """
    from unet_tf import data

    present = {p.name for p in data.list_sample_dirs(train_dir)}
    ids = committed
    if not set(committed) <= present:
        index = data.build_index(train_dir)
        ids = data.make_validation_split(index, fraction=0.12, seed=2018)
        if not ids:
            ids = sorted(present)[:1]
        print(
            f"note: the committed validation ids are not all in {train_dir}; using a split "
            f"of the {len(present)} images there ({len(ids)} for validation)"
        )
    data.save_ids(path, ids, header="validation split used by the Kaggle kernel")
    return ids


# --- building the kernel --------------------------------------------------------------


def _cell(cell_type: str, source: str, tags=()) -> dict:
    cell = {"cell_type": cell_type, "metadata": {"tags": list(tags)} if tags else {}}
    cell["source"] = source
    if cell_type == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _source(cell: dict) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def _guarded(source: str, condition: str) -> str:
    """Wrap a cell's code in ``if condition:`` so that it can be skipped as a whole."""
    body = "\n".join(f"    {line}" if line.strip() else "" for line in source.splitlines())
    return f"if {condition}:\n{body or '    pass'}\n"


def package_sources(root: Path) -> dict[str, str]:
    """The ``unet_tf`` source files, by name, as the kernel writes them."""
    return {path.name: path.read_text() for path in sorted((root / "unet_tf").glob("*.py"))}


def build_notebook(root: Path) -> dict:
    """The kernel notebook (nbformat 4 JSON) from the repository at ``root``."""
    notebooks = {
        name: json.loads((root / "notebooks" / f"{name}.ipynb").read_text()) for name in NOTEBOOKS
    }
    # One parameters cell: the kernel's own, then each notebook's, the first of a name kept.
    lines, sections = KERNEL_PARAMETERS.splitlines(), {}
    for name, notebook in notebooks.items():
        code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
        lines += _source(code[1]).splitlines()
        sections[name] = [cell for cell in notebook["cells"] if cell is not code[1]]
    by_name = {}
    for line in lines:
        by_name.setdefault(line.split(":", 1)[0].strip(), line)
    parameters = [line for name, line in by_name.items() if name]
    sources = package_sources(root)
    committed = (root / "data" / "splits" / "validation_ids.txt").read_text()
    setup = f"""# Write the unet_tf package of the repository this kernel was built from, so
# that the kernel runs exactly that code with no internet and no pip install.
import os
import sys
from pathlib import Path

UNET_TF_SOURCES = {json.dumps(sources, indent=0)}
COMMITTED_VALIDATION_IDS = {json.dumps(committed)}

package_root = Path(output_root) / "unet_tf_package"
(package_root / "unet_tf").mkdir(parents=True, exist_ok=True)
for file_name, text in UNET_TF_SOURCES.items():
    (package_root / "unet_tf" / file_name).write_text(text)
sys.path.insert(0, str(package_root))
from unet_tf import kaggle

found = kaggle.prepare(input_root, output_root)
print({{key: str(value) for key, value in found.items()}})
committed_ids = [line for line in COMMITTED_VALIDATION_IDS.splitlines() if line and line[0] != "#"]
kaggle.write_validation_ids(os.environ["UNET_TF_VALIDATION_IDS"], committed_ids, found["train"])
train_here = not model_dir
if not train_here:
    kaggle.attach_model(model_dir, os.environ["UNET_TF_MODELS_DIR"], model_name)
"""
    cells = [
        _cell(
            "markdown",
            "# unet-tf on the Data Science Bowl 2018\n\n"
            "Generated by `make kaggle` from the unet-tf repository: trains the U-Net "
            "(`02-training`), tunes the post-processing on the validation split "
            "(`03-results`) and writes `submission.csv` for every image the sample submission "
            "lists (`04-submission`). With `model_dir` set to an attached dataset holding "
            "`unet.keras` and `unet.inference.json`, it only predicts.",
        ),
        _cell("code", "\n".join(parameters) + "\n", tags=["parameters"]),
        _cell("code", setup),
    ]
    for name, section in sections.items():
        for cell in section:
            if cell["cell_type"] == "markdown":
                cells.append(_cell("markdown", _source(cell)))
            elif name == "04-submission":
                source = _source(cell)
                if "max_images < 0" in source:
                    # Every listed image must be in the submission, whatever max_images
                    # limited for training and tuning.
                    source = "max_images = 0\n" + source
                cells.append(_cell("code", source))
            else:
                cells.append(_cell("code", _guarded(_source(cell), "train_here")))
    for index, cell in enumerate(cells):
        cell["id"] = f"kernel-{index:03d}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def attach_model(model_dir: str | Path, models_dir: str | Path, model_name: str = "unet") -> None:
    """Copy a trained model and its tuned settings from an attached dataset into place.

    Raises
    ------
    FileNotFoundError
        If ``model_dir`` lacks ``<model_name>.keras`` or ``<model_name>.inference.json``.
    """
    import shutil

    model_dir, models_dir = Path(model_dir), Path(models_dir)
    needed = [model_dir / f"{model_name}.keras", model_dir / f"{model_name}.inference.json"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"model_dir {model_dir} lacks {missing}; attach the models/ folder of a "
            "`make report` run (the model and the settings 03-results tuned)"
        )
    models_dir.mkdir(parents=True, exist_ok=True)
    for path in needed:
        shutil.copyfile(path, models_dir / path.name)


def kernel_metadata(username: str, title: str = "unet-tf DSB2018") -> dict:
    """``kernel-metadata.json`` for ``kaggle kernels push``."""
    return {
        "id": f"{username}/{KERNEL_SLUG}",
        "title": title,
        "code_file": KERNEL_FILE,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": True,
        "enable_internet": False,
        "dataset_sources": [],
        "competition_sources": [COMPETITION],
        "kernel_sources": [],
        "model_sources": [],
    }


def kaggle_username() -> str | None:
    """The Kaggle user name from ``KAGGLE_USERNAME`` or ``~/.kaggle/kaggle.json``, if any."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    credentials = Path.home() / ".kaggle" / "kaggle.json"
    if credentials.is_file():
        try:
            return json.loads(credentials.read_text()).get("username")
        except (OSError, json.JSONDecodeError):
            return None
    return None


def build(output_dir: str | Path, root: str | Path, username: str | None = None) -> Path:
    """Write the kernel notebook and ``kernel-metadata.json`` into ``output_dir``."""
    from unet_tf.files import write_json

    output_dir, root = Path(output_dir), Path(root)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / KERNEL_FILE, build_notebook(root))
    write_json(output_dir / "kernel-metadata.json", kernel_metadata(username or "USERNAME"))
    return output_dir


def main(argv=None) -> int:
    """Command-line entry point of ``make kaggle``."""
    from unet_tf import config

    parser = argparse.ArgumentParser(description="Build the Kaggle kernel into build/kaggle/.")
    parser.add_argument("--output", type=Path, default=config.PROJECT_ROOT / "build" / "kaggle")
    parser.add_argument("--username", help="Kaggle user name (default: from the Kaggle CLI)")
    args = parser.parse_args(argv)
    username = args.username or kaggle_username()
    build(args.output, config.PROJECT_ROOT, username)
    print(f"wrote {args.output / KERNEL_FILE} and kernel-metadata.json")
    if not username:
        print(
            "note: no Kaggle user name found (KAGGLE_USERNAME or ~/.kaggle/kaggle.json); "
            "kernel-metadata.json says USERNAME: edit it, or pass --username",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
