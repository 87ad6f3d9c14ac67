"""The training run as a library call and a command: TrainingConfig, train, the CLI."""

import ast
import json
from dataclasses import asdict, fields, replace

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_TRAINING

from unet_tf import config, training
from unet_tf.cli import main as cli

TINY = {**TINY_TRAINING, "jit_compile": False}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "epochs must be positive"),
        ({"max_minutes": -1.0}, "max_minutes must be positive"),
        ({"crop_size": 100}, "multiple of 2\\*\\*depth = 16"),
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"target": "edges"}, "unknown target 'edges'"),
        ({"contact_weight": -1.0}, "contact_weight"),
        ({"max_images": -2}, "max_images"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"distribution": "tpu"}, "unknown distribution 'tpu'"),
        ({"precision": "int8"}, "unknown precision 'int8'"),
        ({"epochs": 2.5}, "epochs must be int"),
        ({"jit_compile": 1}, "jit_compile must be bool"),
        ({"deformation": "twist"}, "unknown deformation 'twist'"),
        ({"model_name": "../x"}, "model_name"),
        ({"weight_averaging": 1.5}, "weight_averaging must be in"),
    ],
)
def test_a_bad_parameter_is_refused_by_name_when_the_config_is_made(change, message):
    with pytest.raises(ValueError, match=message):
        training.TrainingConfig(**change)


def test_the_training_notebook_declares_every_field_with_the_library_defaults():
    notebook = nbformat.read(config.PROJECT_ROOT / "notebooks" / "02-training.ipynb", 4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    declared = {
        node.target.id: node.value.value
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.AnnAssign)
    }
    defaults = {item.name: item.default for item in fields(training.TrainingConfig)}
    assert declared == defaults


def test_from_mapping_needs_every_field():
    values = asdict(training.TrainingConfig())
    assert training.TrainingConfig.from_mapping({**values, "other": 1}) == training.TrainingConfig()
    del values["seed"]
    with pytest.raises(ValueError, match="missing: \\['seed'\\]"):
        training.TrainingConfig.from_mapping(values)


def _checkpoint(folder, parameters):
    """A stand-in checkpoint of one complete epoch made with ``parameters``."""
    (folder / "epoch-0001").mkdir(parents=True)
    state = {"checkpoint": "epoch-0001", "epochs_completed": 1, "parameters": parameters}
    (folder / "epoch-0001" / "state.json").write_text(json.dumps(state))
    (folder / "latest").write_text("epoch-0001\n")


def test_a_refused_resume_leaves_the_precision_policy_as_it_was(tmp_path):
    import keras

    base = training.TrainingConfig(**TINY, model_name="tiny")
    _checkpoint(tmp_path / "tiny.resume", asdict(base))
    changed = replace(base, precision="mixed_bfloat16")
    with pytest.raises(ValueError, match=r"other parameters.*'precision'"):
        training.train(changed, data_dir=tmp_path / "none", models_dir=tmp_path)
    assert keras.mixed_precision.global_policy().name == "float32"


OTHER_VALUES = {
    int: lambda value: value * 2 or 3,
    float: lambda value: value + 0.5 if value < 0.5 else value / 2,
    bool: lambda value: not value,
}
CHANGES = {
    "target": "binary",
    "loss": "focal",
    "model_name": "unet",
    "distribution": "mirrored",
    "precision": "mixed_bfloat16",
    "crop_size": 64,
    "max_scale": 1.5,
    "colour_augmentation": 0.25,
    "balance": 1.0,
    "balance_by": "type",
    "representation": "rgb",
    "deformation": "affine",
    "schedule": "plateau",
    "dataset": "lung_ct",
    "task": {"task": "semantic", "target": "binary"},
    "window_min": -1000.0,
    "init_model": "other.keras",
    "normalised_diameter": 16.0,
}


@pytest.mark.parametrize("name", [item.name for item in fields(training.TrainingConfig)])
def test_a_resume_with_any_changed_parameter_but_the_budget_is_refused(tmp_path, name):
    base = training.TrainingConfig(**TINY, model_name="tiny")
    value = getattr(base, name)
    change = CHANGES.get(name) or OTHER_VALUES[type(value)](value)
    changed = replace(base, **(change if isinstance(change, dict) else {name: change}))
    assert getattr(changed, name) != value
    resume_dir = tmp_path / f"{changed.model_name}.resume"
    _checkpoint(resume_dir, asdict(base))
    if name in training.RESUMABLE:
        # Accepted: train goes on to read the data, which is not there.
        with pytest.raises(FileNotFoundError, match="no such data folder"):
            training.train(changed, data_dir=tmp_path / "none", models_dir=tmp_path)
    else:
        with pytest.raises(ValueError, match=f"other parameters.*'{name}'"):
            training.train(changed, data_dir=tmp_path / "none", models_dir=tmp_path)
    assert resume_dir.is_dir(), "a refused resume keeps the checkpoint"


def test_a_checkpoint_from_before_a_parameter_existed_resumes_only_as_what_it_did(tmp_path):
    before = training.TrainingConfig(**TINY, model_name="tiny", tissue_augmentation=0.0)
    parameters = asdict(before)
    del parameters["tissue_augmentation"]
    _checkpoint(tmp_path / "tiny.resume", parameters)
    # Accepted: train goes on to read the data, which is not there.
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        training.train(before, data_dir=tmp_path / "none", models_dir=tmp_path)
    today = replace(before, tissue_augmentation=1.0)
    refused = r"other parameters.*'tissue_augmentation': \(0.0, 1.0\)"
    with pytest.raises(ValueError, match=refused):
        training.train(today, data_dir=tmp_path / "none", models_dir=tmp_path)


# A parameter removed since (the stain augmentation, 8c0070e): off, it did what runs do today.
REMOVED_OFF, REMOVED_ON = {"stain_augmentation": 0.0}, {"stain_augmentation": 0.3}
REFUSED_REMOVED = r"does not have \(\{'stain_augmentation': 0.3\}\)"


def test_a_checkpoint_with_a_removed_parameter_resumes_only_where_it_was_off(tmp_path):
    base = training.TrainingConfig(**TINY, model_name="tiny")
    off, on = tmp_path / "off", tmp_path / "on"
    _checkpoint(off / "tiny.resume", {**asdict(base), **REMOVED_OFF})
    # Accepted: train goes on to read the data, which is not there.
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        training.train(base, data_dir=tmp_path / "none", models_dir=off)
    _checkpoint(on / "tiny.resume", {**asdict(base), **REMOVED_ON})
    with pytest.raises(ValueError, match=REFUSED_REMOVED):
        training.train(base, data_dir=tmp_path / "none", models_dir=on)
    assert (on / "tiny.resume").is_dir(), "a refused resume keeps the checkpoint"


def test_a_record_with_a_removed_parameter_counts_only_where_it_was_off(disc_model_path, tmp_path):
    today = training.TrainingConfig(model_name="old")
    paths = today.paths(tmp_path)
    paths["model"].write_bytes(disc_model_path.read_bytes())
    for removed, counts in ((REMOVED_OFF, True), (REMOVED_ON, False)):
        record = {"parameters": {**asdict(today), **removed}, "excluded_ids": []}
        paths["record"].write_text(json.dumps(record))
        assert (training.finished_run(today, tmp_path) is not None) == counts
    assert training.recorded_parameters({**asdict(today), **REMOVED_OFF}) == asdict(today)
    assert training.unknown_parameters({**asdict(today), **REMOVED_ON}) == REMOVED_ON


@pytest.mark.slow
def test_train_then_evaluate_from_the_command_line(disc_folder, tmp_path, capsys):
    root, ids = disc_folder
    models = tmp_path / "models"
    options = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in TINY.items()
        if name != "jit_compile"
    ]
    common = ["--data", str(root), "--validation-ids", str(ids)]
    status = cli(
        ["train", *common, "--models-dir", str(models), "--no-jit-compile", "--quiet", *options]
    )
    assert status == 0, capsys.readouterr().err
    record = training.read_run_record(models / "unet.json")
    assert record["parameters"] == asdict(training.TrainingConfig(**TINY, dataset=str(root)))
    assert record["epochs_trained"] == 2 and record["validation_images"] == 2
    assert not (models / "unet.resume").exists()
    capsys.readouterr()

    model = models / "unet.keras"
    report = tmp_path / "scores.json"
    status = cli(
        ["evaluate", "--model", str(model), *common, "--tune", "--no-tta", "--json", str(report)]
    )
    assert status == 0, capsys.readouterr().err
    assert "tuned:" in capsys.readouterr().out
    scores = json.loads(report.read_text())
    assert scores["images"] == 2
    assert set(scores["by_imaging_type"]) == {"fluorescence"}
    assert json.loads(model.with_name("unet.inference.json").read_text())["tta"] is False

    # Without --tune it scores with the settings just stored, to the same number.
    status = cli(["evaluate", "--model", str(model), *common, "--no-tta", "--json", str(report)])
    assert status == 0
    assert json.loads(report.read_text())["dsb_score"] == pytest.approx(scores["dsb_score"])


def test_evaluate_gives_the_known_score_of_a_model_that_finds_every_bright_pixel(
    disc_model_path, disc_folder, tmp_path
):
    from scipy import ndimage

    from unet_tf import data, metrics

    root, ids = disc_folder
    report = tmp_path / "scores.json"
    common = ["--data", str(root), "--validation-ids", str(ids), "--no-tta"]
    status = cli(["evaluate", "--model", str(disc_model_path), *common, "--json", str(report)])
    assert status == 0
    # The model marks exactly the discs' pixels and its settings take connected components:
    # its answer is the truth with touching discs merged, whose score the metric gives.
    truths = [data.read_labels(root / image_id) for image_id in data.load_ids(ids)]
    expected = np.mean([metrics.dsb_score(t, ndimage.label(t > 0)[0]) for t in truths])
    scores = json.loads(report.read_text())
    assert scores["images"] == 2
    assert scores["dsb_score"] == pytest.approx(expected, abs=1e-6)
    assert scores["pixel_iou"] == scores["dice"] == 1.0
    assert expected > 0.5  # Most discs stand alone: a model finding nothing scores 0.


def test_evaluate_writes_each_image_with_its_expected_score(
    disc_model_path, disc_folder, tmp_path, capsys
):
    import shutil

    from test_viewer import constant_estimate

    from unet_tf import quality

    root, ids = disc_folder
    model = tmp_path / "model" / disc_model_path.name
    shutil.copytree(disc_model_path.parent, model.parent)
    common = ["--data", str(root), "--validation-ids", str(ids), "--no-tta"]
    table = tmp_path / "images.csv"
    assert cli(["evaluate", "--model", str(model), *common, "--csv", str(table)]) == 0
    plain = pd.read_csv(table)
    assert "expected_dsb" not in plain
    constant_estimate(0.7, threshold=0.5).save(quality.quality_path(model))
    assert cli(["evaluate", "--model", str(model), *common, "--csv", str(table)]) == 0
    rows = pd.read_csv(table)
    assert len(rows) == 2 and (rows.expected_dsb == 0.7).all() and rows.reliable.all()
    # The estimate adds columns and changes no score.
    pd.testing.assert_frame_equal(rows[plain.columns], plain)
    assert "0 images flagged unreliable" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("amx", [True, False], ids=["amx-cpu", "other-cpu"])
def test_each_path_of_auto_precision_trains_and_saves_a_float32_model(
    disc_folder, tmp_path, monkeypatch, amx
):
    import keras

    root, ids = disc_folder
    monkeypatch.setattr(training, "has_bfloat16_units", lambda: amx)
    settings = training.TrainingConfig(**{**TINY, "precision": "auto", "jit_compile": True})
    result = training.train(settings, root, ids, tmp_path, verbose=0)
    record = training.read_run_record(result.paths["record"])
    expected = ("mixed_bfloat16", False) if amx else ("float32", True)
    assert (record["precision_used"], record["jit_compile_used"]) == expected
    saved = training.load_model(result.paths["model"])
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    assert np.isfinite(result.history.loss).all()
    assert keras.mixed_precision.global_policy().name == "float32"


def test_command_line_mistakes_end_in_one_line(tmp_path, capsys):
    assert cli(["train", "--data", str(tmp_path), "--epochs", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: epochs must be positive, got 0"
    assert cli(["evaluate", "--model", str(tmp_path / "none.keras")]) == 2
    assert "no such model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["train", "--epochs", "many"])
    assert "invalid int value" in capsys.readouterr().err


@pytest.mark.slow
def test_weight_averaging_saves_the_mean_model_and_records_its_scores(
    disc_folder, tmp_path, capsys
):
    root, ids = disc_folder
    settings = training.TrainingConfig(**TINY, weight_averaging=1.0)
    result = training.train(settings, root, ids, tmp_path / "models", verbose=2)
    assert "saved the mean of the last 2 epochs as unet.keras" in capsys.readouterr().out
    record = training.read_run_record(result.paths["record"])
    # Both epochs end inside the averaged tail (all of the budget).
    assert record["averaged_epochs"] == 2
    assert set(record["averaged_validation"]) >= {"val_loss", "val_pixel_iou"}
    saved = training.load_model(result.paths["model"])
    for got, expected in zip(saved.get_weights(), result.model.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    plain = training.train(
        replace(settings, weight_averaging=0.0), root, ids, tmp_path / "plain", verbose=0
    )
    assert training.read_run_record(plain.paths["record"])["averaged_epochs"] == 0


@pytest.mark.slow
def test_fine_tune_trains_on_the_given_images_alone_from_the_base_weights(disc_folder, tmp_path):
    root, ids = disc_folder
    base = training.train(
        training.TrainingConfig(**TINY, balance=0.5), root, ids, tmp_path / "base", verbose=0
    )
    result = training.fine_tune(
        base.paths["model"],
        ["img0", "img1"],
        ["img4"],
        tmp_path / "tuned",
        model_name="specialist",
        data_dir=root,
        epochs=1,
        learning_rate=3e-4,
    )
    record = training.read_run_record(result.paths["record"])
    assert result.paths["model"] == tmp_path / "tuned" / "specialist.keras"
    assert record["train_images"] == 2 and record["validation_images"] == 1
    assert sorted(record["excluded_ids"]) == ["img2", "img3", "img4", "img5"]
    parameters = record["parameters"]
    assert parameters["init_model"] == str(base.paths["model"])
    assert (parameters["learning_rate"], parameters["epochs"], parameters["balance"]) == (
        3e-4,
        1,
        0.0,
    )
    # Everything else is the base model's recipe.
    assert parameters["crop_size"] == TINY["crop_size"]


@pytest.mark.parametrize(
    ("train_ids", "validation_ids", "message"),
    [([], ["img4"], "needs images"), (["img0"], [], "needs images"), (["img4"], ["img4"], "both")],
)
def test_fine_tune_refuses_empty_or_overlapping_id_lists(
    tmp_path, train_ids, validation_ids, message
):
    with pytest.raises(ValueError, match=message):
        training.fine_tune(tmp_path / "base.keras", train_ids, validation_ids, tmp_path)


def test_fine_tune_names_images_the_folder_does_not_have(disc_folder, tmp_path):
    root, _ = disc_folder
    with pytest.raises(ValueError, match=r"no image\(s\) \['img9'\]"):
        training.fine_tune(
            tmp_path / "base.keras", ["img0", "img9"], ["img4"], tmp_path, data_dir=root
        )


def test_fine_tune_refuses_a_base_model_trained_with_a_removed_parameter(disc_folder, tmp_path):
    root, _ = disc_folder
    parameters = {**asdict(training.TrainingConfig(**TINY)), **REMOVED_ON}
    (tmp_path / "base.json").write_text(json.dumps({"parameters": parameters}))
    with pytest.raises(ValueError, match=REFUSED_REMOVED):
        training.fine_tune(tmp_path / "base.keras", ["img0"], ["img4"], tmp_path, data_dir=root)
