"""``unet_tf.config``: every path follows the environment of the moment it is read."""

from pathlib import Path

import pytest

from unet_tf import config


def test_a_variable_set_after_import_takes_effect_with_no_reload(tmp_path, monkeypatch):
    monkeypatch.delenv("UNET_TF_MODELS_DIR", raising=False)
    assert config.MODELS_DIR == config.PROJECT_ROOT / "models"
    monkeypatch.setenv("UNET_TF_MODELS_DIR", str(tmp_path / "models"))
    assert config.MODELS_DIR == (tmp_path / "models").resolve()
    monkeypatch.delenv("UNET_TF_MODELS_DIR")
    assert config.MODELS_DIR == config.PROJECT_ROOT / "models"


def test_derived_paths_follow_the_variable_they_derive_from(tmp_path, monkeypatch):
    for name in ("TRAIN_DIR", "TEST_DIR", "SAMPLE_SUBMISSION"):
        monkeypatch.delenv(f"UNET_TF_{name}", raising=False)
    monkeypatch.setenv("UNET_TF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UNET_TF_REPORTS_DIR", str(tmp_path / "reports"))
    data = (tmp_path / "data").resolve()
    assert config.RAW_DIR == data / "raw"
    assert config.TRAIN_DIR == data / "raw" / "stage1_train"
    assert config.SAMPLE_SUBMISSION == data / "raw" / "stage1_sample_submission.csv"
    assert config.LABEL_CACHE == data / "interim" / "labels" / "stage1_train"
    assert config.FIGURES_DIR == (tmp_path / "reports").resolve() / "figures"
    # A named input overrides the default under the data tree, and only that input.
    monkeypatch.setenv("UNET_TF_TEST_DIR", str(tmp_path / "input" / "stage2_test_final"))
    assert config.TEST_DIR == (tmp_path / "input" / "stage2_test_final").resolve()
    assert config.TRAIN_DIR == data / "raw" / "stage1_train"


def test_every_configured_name_is_an_attribute_and_unknown_names_are_not():
    paths = config.paths()
    for name, value in paths.items():
        assert getattr(config, name) == value, name
        assert name in dir(config), name
        assert isinstance(value, str if name == "DSB2018_URL" else Path), name
    # The constants stay plain module attributes.
    assert "PROJECT_ROOT" not in paths and "SPLITS_DIR" not in paths
    assert config.SPLITS_DIR == config.PROJECT_ROOT / "data" / "splits"
    with pytest.raises(AttributeError, match="has no attribute 'TRAINING_DIR'"):
        config.TRAINING_DIR  # noqa: B018


def test_records_keep_paths_in_the_project_relative_and_read_them_back(tmp_path):
    inside = config.PROJECT_ROOT / "data" / "splits" / "validation_ids.txt"
    assert config.portable(inside) == "data/splits/validation_ids.txt"
    assert config.resolve(config.portable(inside)).resolve() == inside
    # Paths outside the project stay as they are.
    assert config.portable(tmp_path / "x.txt") == str(tmp_path / "x.txt")
