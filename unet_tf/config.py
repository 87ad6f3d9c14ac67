"""Project paths, in one place, each with an environment override.

Every notebook, script and test takes its paths from here, so that nothing in the
repository names an absolute path. The overrides are read when this module is first
imported.

``UNET_TF_DATA_DIR``
    Root of the data tree (default ``<project>/data``).
``UNET_TF_DSB2018_SOURCE``
    Folder holding the Kaggle zips ``stage1_train.zip`` and ``stage1_test.zip``
    (default ``../shared/data/dsb2018`` beside the project).
``UNET_TF_DSB2018_URL``
    Base URL of the official BBBC038 files, used when the source folder has no zips.
``UNET_TF_TRAIN_DIR``, ``UNET_TF_TEST_DIR``, ``UNET_TF_SAMPLE_SUBMISSION``
    The training and test folders (Kaggle layout) and the sample submission, when they are
    not in ``<data>/raw`` (default ``<data>/raw/stage1_train`` and so on).
``UNET_TF_VALIDATION_IDS``
    The validation id list (default the committed ``data/splits/validation_ids.txt``).
``UNET_TF_MODELS_DIR``, ``UNET_TF_REPORTS_DIR``
    Where trained models and generated reports go.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


DATA_DIR = _env_path("UNET_TF_DATA_DIR", PROJECT_ROOT / "data")
RAW_DIR = DATA_DIR / "raw"
EXTERNAL_DIR = DATA_DIR / "external"
INTERIM_DIR = DATA_DIR / "interim"
# Elsewhere than data/raw (a Kaggle kernel's read-only input, say), the three inputs can be
# named one by one.
TRAIN_DIR = _env_path("UNET_TF_TRAIN_DIR", RAW_DIR / "stage1_train")
TEST_DIR = _env_path("UNET_TF_TEST_DIR", RAW_DIR / "stage1_test")
# Label images combined from the stage1_train masks (see unet_tf.data.read_labels_cached).
LABEL_CACHE = INTERIM_DIR / "labels" / "stage1_train"
SAMPLE_SUBMISSION = _env_path("UNET_TF_SAMPLE_SUBMISSION", RAW_DIR / "stage1_sample_submission.csv")

# The fixed validation split is part of the repository, not of the (ignored) data tree.
SPLITS_DIR = PROJECT_ROOT / "data" / "splits"
VALIDATION_IDS = _env_path("UNET_TF_VALIDATION_IDS", SPLITS_DIR / "validation_ids.txt")

DSB2018_SOURCE = _env_path(
    "UNET_TF_DSB2018_SOURCE", PROJECT_ROOT.parent / "shared" / "data" / "dsb2018"
)
DSB2018_URL = os.environ.get("UNET_TF_DSB2018_URL", "https://data.broadinstitute.org/bbbc/BBBC038/")

MODELS_DIR = _env_path("UNET_TF_MODELS_DIR", PROJECT_ROOT / "models")
REPORTS_DIR = _env_path("UNET_TF_REPORTS_DIR", PROJECT_ROOT / "reports")
FIGURES_DIR = REPORTS_DIR / "figures"
