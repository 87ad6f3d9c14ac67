"""Project paths, in one place, each with an environment override.

Every notebook, script and test takes its paths from here, so that nothing in the
repository names an absolute path. The names below (``config.DATA_DIR``,
``config.TRAIN_DIR`` and so on) are computed by :func:`paths` each time they are read, from
the environment of that moment: a variable set after this module is imported (as the Kaggle
kernel does, see :func:`unet_tf.kaggle.prepare`) takes effect at once, with no reload. A value
copied out of the module (``from unet_tf.config import DATA_DIR``, a default argument) keeps
the environment of the moment it was copied; read ``config.DATA_DIR`` where it is used.
Relative values are taken relative to the working folder at that moment.

``UNET_TF_DATA_DIR``
    Root of the data tree (default ``<project>/data``), holding ``raw/`` (``RAW_DIR``),
    ``external/`` (``EXTERNAL_DIR``, downloads) and ``interim/`` (``INTERIM_DIR``, with
    ``LABEL_CACHE``).
``UNET_TF_DSB2018_SOURCE``
    Folder holding the Kaggle zips ``stage1_train.zip`` and ``stage1_test.zip``
    (default ``../shared/data/dsb2018`` beside the project): ``DSB2018_SOURCE``.
``UNET_TF_DSB2018_URL``
    Base URL of the official BBBC038 files, used when the source folder has no zips:
    ``DSB2018_URL``, a string.
``UNET_TF_TRAIN_DIR``, ``UNET_TF_TEST_DIR``, ``UNET_TF_SAMPLE_SUBMISSION``
    The training and test folders (Kaggle layout) and the sample submission, when they are
    not in ``<data>/raw`` (default ``<data>/raw/stage1_train`` and so on).
``UNET_TF_LUNG_CT_SOURCE``, ``UNET_TF_LUNG_CT_DIR``
    Folder holding ``lung_ct.zip`` (default ``../shared/data/lung_ct``), and where it is
    unpacked (default ``<data>/raw/lung_ct``, with ``images/`` and ``masks/``).
``UNET_TF_VALIDATION_IDS``
    The validation id list (default the committed ``data/splits/validation_ids.txt``).
``UNET_TF_MODELS_DIR``, ``UNET_TF_REPORTS_DIR``
    Where trained models and generated reports go (figures in ``<reports>/figures``,
    ``FIGURES_DIR``).

``PROJECT_ROOT`` and ``SPLITS_DIR`` (the committed splits) depend on no variable and are
plain constants.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The fixed validation split is part of the repository, not of the (ignored) data tree.
SPLITS_DIR = PROJECT_ROOT / "data" / "splits"


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def paths() -> dict[str, Path | str]:
    """Every configured location, by its module name, from the current environment.

    ``config.TRAIN_DIR`` is ``paths()["TRAIN_DIR"]``; all are :class:`~pathlib.Path` but
    ``DSB2018_URL``.

    >>> paths()["FIGURES_DIR"] == paths()["REPORTS_DIR"] / "figures"
    True
    """
    data_dir = _env_path("UNET_TF_DATA_DIR", PROJECT_ROOT / "data")
    raw_dir = data_dir / "raw"
    interim_dir = data_dir / "interim"
    reports_dir = _env_path("UNET_TF_REPORTS_DIR", PROJECT_ROOT / "reports")
    return {
        "DATA_DIR": data_dir,
        "RAW_DIR": raw_dir,
        "EXTERNAL_DIR": data_dir / "external",
        "INTERIM_DIR": interim_dir,
        # Elsewhere than data/raw (a Kaggle kernel's read-only input, say), the three inputs
        # can be named one by one.
        "TRAIN_DIR": _env_path("UNET_TF_TRAIN_DIR", raw_dir / "stage1_train"),
        "TEST_DIR": _env_path("UNET_TF_TEST_DIR", raw_dir / "stage1_test"),
        # Label images combined from the stage1_train masks (unet_tf.data.read_labels_cached).
        "LABEL_CACHE": interim_dir / "labels" / "stage1_train",
        "SAMPLE_SUBMISSION": _env_path(
            "UNET_TF_SAMPLE_SUBMISSION", raw_dir / "stage1_sample_submission.csv"
        ),
        "VALIDATION_IDS": _env_path("UNET_TF_VALIDATION_IDS", SPLITS_DIR / "validation_ids.txt"),
        "DSB2018_SOURCE": _env_path(
            "UNET_TF_DSB2018_SOURCE", PROJECT_ROOT.parent / "shared" / "data" / "dsb2018"
        ),
        "DSB2018_URL": os.environ.get(
            "UNET_TF_DSB2018_URL", "https://data.broadinstitute.org/bbbc/BBBC038/"
        ),
        # The lung CT slices of the own-data example (unet_tf.datasets), in the folder layout.
        "LUNG_CT_DIR": _env_path("UNET_TF_LUNG_CT_DIR", raw_dir / "lung_ct"),
        "LUNG_CT_SOURCE": _env_path(
            "UNET_TF_LUNG_CT_SOURCE", PROJECT_ROOT.parent / "shared" / "data" / "lung_ct"
        ),
        "MODELS_DIR": _env_path("UNET_TF_MODELS_DIR", PROJECT_ROOT / "models"),
        "REPORTS_DIR": reports_dir,
        "FIGURES_DIR": reports_dir / "figures",
    }


def resolve(path: str | Path) -> Path:
    """A path a user gave: as given where it exists, else relative to the project root.

    Notebooks run in ``notebooks/``, so ``data/raw/my_images`` written in a notebook means
    the project's folder, as it does on the command line in the project root.
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    in_project = PROJECT_ROOT / path
    return in_project if in_project.exists() else path


def portable(path: str | Path) -> str:
    """A path as records keep it: relative to the project root where it lies inside the
    project, so that a run record names no user's folders and still works in another clone;
    other paths as given. :func:`resolve` reads it back.

    >>> portable(PROJECT_ROOT / "data" / "raw" / "stage1_train")
    'data/raw/stage1_train'
    """
    path = Path(path)
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)


def __getattr__(name: str) -> Path | str:
    # Called only for names the module does not define (PEP 562): the configured locations,
    # which are computed on every read so that they follow the environment.
    try:
        return paths()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *paths()])
