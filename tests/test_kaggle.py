"""``make kaggle``: the generated kernel runs on a fake /kaggle tree, writes a valid submission."""

import json
import re
import shutil
import sys
import zipfile

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
from conftest import TINY_TRAINING, disc, printed_outputs, write_sample

from unet_tf import config, data, kaggle, kernel_setup, report, submission

SMOKE = {
    **TINY_TRAINING,
    "epochs": 1,
    "tta": False,
    "tile_size": 64,
    "seed": 1,
}


def synthetic_competition(root, zipped: bool):
    """A /kaggle/input/data-science-bowl-2018 tree: 8 training and 3 test images of discs."""
    rng = np.random.default_rng(0)
    staging = root.parent / f"{root.name}-staging"
    for stage, count in (("stage1_train", 8), ("stage1_test", 3)):
        for index in range(count):
            shape = (48 + 8 * index, 64)
            masks = [disc(shape, rng.integers(10, 38, 2), rng.integers(4, 8)) for _ in range(3)]
            image = np.zeros((*shape, 3), np.uint8)
            image[np.any(masks, axis=0)] = 180
            write_sample(staging / stage, f"{stage}_{index}", image, masks)
    test_ids = sorted(p.name for p in (staging / "stage1_test").iterdir())
    sample = pd.DataFrame({"ImageId": test_ids, "EncodedPixels": "1 1"})
    root.mkdir(parents=True)
    if not zipped:
        for stage in ("stage1_train", "stage1_test"):
            shutil.copytree(staging / stage, root / stage)
        sample.to_csv(root / "stage1_sample_submission.csv", index=False)
        return test_ids
    for stage in ("stage1_train", "stage1_test"):
        with zipfile.ZipFile(root / f"{stage}.zip", "w") as archive:
            for path in sorted((staging / stage).rglob("*")):
                archive.write(path, path.relative_to(staging / stage))
    with zipfile.ZipFile(root / "stage1_sample_submission.csv.zip", "w") as archive:
        archive.writestr("stage1_sample_submission.csv", sample.to_csv(index=False))
    return test_ids


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    folder = tmp_path_factory.mktemp("build")
    kaggle.build(folder, config.PROJECT_ROOT, username="someone")
    return folder


def run_kernel(kernel, tmp_path, zipped, **parameters):
    input_root = tmp_path / "input" / kaggle.COMPETITION
    test_ids = synthetic_competition(input_root, zipped)
    output_root = tmp_path / "working"
    output_root.mkdir()
    papermill.execute_notebook(
        str(kernel / kaggle.KERNEL_FILE),
        str(tmp_path / "executed.ipynb"),
        parameters={
            "input_root": str(input_root),
            "output_root": str(output_root),
            **SMOKE,
            **parameters,
        },
        kernel_name=report.KERNEL_NAME,
        cwd=str(tmp_path),
        progress_bar=False,
    )
    path = output_root / "submission.csv"
    unpacked = output_root / "data" / "raw"
    test_dir = (unpacked if zipped else input_root) / "stage1_test"
    shapes = {
        image_id: image.shape[:2]
        for image_id, image, _ in data.load_samples(test_dir, with_labels=False)
    }
    check = submission.validate_submission(path, shapes)
    assert check["images"] == len(test_ids) == 3
    assert list(dict.fromkeys(pd.read_csv(path).ImageId)) == test_ids
    return output_root


@pytest.mark.slow
def test_the_kernel_trains_on_folders_then_predicts_from_zips_with_an_attached_model(
    kernel, tmp_path
):
    # max_images limits training and tuning to 2 images; the submission still holds all 3.
    trained = run_kernel(kernel, tmp_path / "folders", zipped=False, max_images=2)
    models = trained / "models"
    assert (models / "unet.keras").is_file() and (models / "unet.log.csv").is_file()
    assert (models / "unet.inference.json").is_file()

    attached = tmp_path / "attached-dataset"
    attached.mkdir()
    for name in ("unet.keras", "unet.inference.json"):
        shutil.copy(models / name, attached / name)
    predicted = run_kernel(kernel, tmp_path / "zips", zipped=True, model_dir=str(attached))
    assert not (predicted / "models" / "unet.log.csv").exists()  # Nothing was trained.
    # The kernel said it unpacked the zips (its source, which has the word, does not count).
    printed = "".join(printed_outputs(tmp_path / "zips" / "executed.ipynb"))
    assert re.search(r"unpacking \S+stage1_test\.zip into ", printed), printed[-2000:]


def tagged(notebook, tag):
    """The cells of a notebook (JSON or nbformat) that have ``tag``."""
    return [cell for cell in notebook["cells"] if tag in cell["metadata"].get("tags", [])]


def test_the_kernel_is_one_self_contained_notebook_of_this_commit(kernel):
    notebook = nbformat.read(kernel / kaggle.KERNEL_FILE, as_version=4)
    nbformat.validate(notebook)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    [parameters] = tagged(notebook, "parameters")
    [setup] = tagged(notebook, "kernel-setup")
    # The parameters come first, then the setup that reads them, as papermill requires.
    assert code[:2] == [parameters.source, setup.source]
    for name in ("input_root", "output_root", "model_dir", "epochs", "tta", "max_images"):
        assert re.search(rf"^{name}: ", parameters.source, re.MULTILINE), name
    assert '"/kaggle/input/data-science-bowl-2018"' in parameters.source
    # The setup program is the kernel_setup module itself, which ruff and the tests see.
    module = (config.PROJECT_ROOT / "unet_tf" / "kernel_setup.py").read_text()
    assert setup.source.startswith(module.rstrip())
    # Every module of the package travels in the kernel, exactly as in the repository.
    for path in (config.PROJECT_ROOT / "unet_tf").glob("*.py"):
        assert json.dumps(path.read_text()) in setup.source, path.name
    # Nothing is installed: no shell escapes, no pip.
    assert not any(re.search(r"^\s*[!%]", source, re.MULTILINE) for source in code)
    assert not any("subprocess" in source for source in code)


def test_kernel_metadata_has_what_the_kaggle_cli_requires(kernel):
    metadata = json.loads((kernel / "kernel-metadata.json").read_text())
    for field in ("id", "title", "code_file", "language", "kernel_type"):
        assert metadata[field], field
    user, slug = metadata["id"].split("/")
    assert user == "someone" and re.fullmatch(r"[a-z0-9-]+", slug)
    # The Kaggle CLI derives the slug from the title; they must agree.
    assert re.sub(r"[^a-z0-9]+", "-", metadata["title"].lower()).strip("-") == slug
    assert (kernel / metadata["code_file"]).is_file()
    assert metadata["language"] == "python" and metadata["kernel_type"] == "notebook"
    assert metadata["competition_sources"] == ["data-science-bowl-2018"]
    assert metadata["enable_internet"] is False and metadata["enable_gpu"] is True
    for field in ("dataset_sources", "kernel_sources", "competition_sources"):
        assert isinstance(metadata[field], list)


def test_locate_prefers_stage_2_and_reports_what_is_missing(tmp_path):
    root = tmp_path / "input"
    root.mkdir()
    with pytest.raises(FileNotFoundError, match="no stage1_train"):
        kaggle.locate(root)
    for name in ("stage1_train", "stage1_test", "stage2_test_final"):
        (root / name).mkdir()
    (root / "stage1_sample_submission.csv").write_text("ImageId,EncodedPixels\n")
    assert kaggle.locate(root)["stage"] == "stage1"
    (root / "stage2_sample_submission_final.csv").write_text("ImageId,EncodedPixels\n")
    assert kaggle.locate(root)["stage"] == "stage2"
    assert kaggle.locate(root)["test"].name == "stage2_test_final"


def test_an_attached_dataset_without_settings_is_named(tmp_path):
    (tmp_path / "unet.keras").write_bytes(b"model")
    with pytest.raises(FileNotFoundError, match=r"unet\.inference\.json"):
        kaggle.attach_model(tmp_path, tmp_path / "models")


def test_an_attached_quality_estimate_comes_along_and_its_absence_is_no_error(tmp_path):
    source = tmp_path / "dataset"
    source.mkdir()
    for name in ("unet.keras", "unet.inference.json"):
        (source / name).write_text(name)
    kaggle.attach_model(source, tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "unet.inference.json",
        "unet.keras",
    ]
    (source / "unet.quality.json").write_text("{}")
    kaggle.attach_model(source, tmp_path / "models")
    assert (tmp_path / "models" / "unet.quality.json").read_text() == "{}"


# --- the builder on small synthetic notebooks ------------------------------------------


def synthetic_notebook(*cells):
    """An nbformat 4 notebook of ``(cell_type, source, tags)`` cells."""
    return {
        "cells": [
            {"cell_type": kind, "metadata": {"tags": list(tags)}, "source": source}
            | ({"execution_count": None, "outputs": []} if kind == "code" else {})
            for kind, source, tags in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_cells(name, parameters="max_images: int = 0\nmodel_name: str = 'unet'\n"):
    """A notebook as the rewritten ones are: title, imports, parameters, then its work."""
    return [
        ("markdown", f"# {name}", ()),
        ("code", "import math\n", ()),
        ("code", parameters, ("parameters",)),
        ("code", f"ran = [*globals().get('ran', []), ({name!r}, max_images)]\n", ()),
    ]


def synthetic_repository(root, notebooks=None):
    """A repository with this one's package and split, and notebooks of the given cells."""
    shutil.copytree(config.PROJECT_ROOT / "unet_tf", root / "unet_tf")
    shutil.copytree(config.SPLITS_DIR, root / "data" / "splits")
    (root / "notebooks").mkdir()
    for name in kaggle.NOTEBOOKS:
        cells = (notebooks or {}).get(name) or notebook_cells(name)
        (root / "notebooks" / f"{name}.ipynb").write_text(json.dumps(synthetic_notebook(*cells)))
    return root


def run_sections(notebook, **parameters):
    """Run the kernel's cells after the setup cell, with the given parameters, as Python."""
    namespace = {"train_here": True, **parameters}
    cells = notebook["cells"]
    for cell in cells[cells.index(*tagged(notebook, "kernel-setup")) + 1 :]:
        if cell["cell_type"] == "code":
            exec(cell["source"], namespace)
    return namespace


def test_parameters_cells_are_found_by_tag_wherever_they_are(tmp_path):
    moved = notebook_cells("02-training")
    moved = [moved[0], moved[1], moved[3], moved[2]]  # The parameters cell comes last.
    root = synthetic_repository(tmp_path, {"02-training": moved})
    notebook = kaggle.build_notebook(root)
    parameters = notebook["cells"][1]
    assert parameters["metadata"]["tags"] == ["parameters"]
    assert "max_images: int = 0" in parameters["source"]
    # No notebook's parameters cell is left in its section, wherever it was.
    assert tagged(notebook, "parameters") == [parameters]
    ran = run_sections(notebook, max_images=5)["ran"]
    assert ran == [("02-training", 5), ("03-results", 5), ("04-submission", 0)]


@pytest.mark.parametrize("tags", [(), ("parameters",)], ids=["untagged", "tagged-twice"])
def test_a_notebook_without_exactly_one_parameters_cell_is_named(tmp_path, tags):
    cells = notebook_cells("03-results")
    cells[2] = ("code", cells[2][1], tags)
    if tags:
        cells.append(("code", "tile_size: int = 64\n", tags))
    root = synthetic_repository(tmp_path, {"03-results": cells})
    with pytest.raises(ValueError, match=r"03-results: [02] code cells are tagged 'parameters'"):
        kaggle.build_notebook(root)


def test_the_submission_predicts_every_image_whatever_max_images_said(tmp_path):
    root = synthetic_repository(tmp_path)
    notebook = kaggle.build_notebook(root)
    [cell] = tagged(notebook, "section-parameters")
    assert re.search(r"^max_images = 0  # .*every", cell["source"], re.MULTILINE)
    # It stands where 04-submission's parameters cell was: after its title and imports.
    at = notebook["cells"].index(cell)
    assert notebook["cells"][at - 2]["source"] == "# 04-submission"
    assert run_sections(notebook, max_images=2)["max_images"] == 0


def test_a_submission_notebook_without_max_images_is_named(tmp_path):
    cells = notebook_cells("04-submission", parameters="model_name: str = 'unet'\n")
    root = synthetic_repository(tmp_path, {"04-submission": cells})
    with pytest.raises(ValueError, match=r"04-submission: no parameter \['max_images'\]"):
        kaggle.build_notebook(root)


def test_parameters_keep_their_comments_and_must_be_plain_assignments():
    source = "# The budget:\nminutes: float = 6 * 7  # wall time\n\nname = 'unet'\n"
    assert kaggle.parameter_assignments(source, "02-training") == {
        "minutes": "# The budget:\nminutes: float = 6 * 7  # wall time",
        "name": "name = 'unet'",
    }
    for bad in ("import math\n", "a = b = 1\n", "a = 1; b = 2\n", "size: int\n"):
        with pytest.raises(ValueError, match="02-training: line 1 of the parameters cell"):
            kaggle.parameter_assignments(bad, "02-training")
    with pytest.raises(ValueError, match=r"02-training: parameter tau is computed from \['np'\]"):
        kaggle.parameter_assignments("tau = 2 * np.pi\n", "02-training")


def test_skipped_cells_keep_their_multi_line_strings(tmp_path):
    cells = notebook_cells("02-training")
    cells[3] = ("code", 'text = """first\n  second\n"""\nvalue = f"""{1}\n{2}"""\n', ())
    root = synthetic_repository(tmp_path, {"02-training": cells})
    notebook = kaggle.build_notebook(root)
    [guarded] = [c for c in notebook["cells"] if c["source"].startswith("if train_here:\n    text")]
    namespace = {"train_here": True}
    exec(guarded["source"], namespace)
    assert namespace["text"] == "first\n  second\n" and namespace["value"] == "1\n2"


def test_setup_refuses_a_package_imported_from_elsewhere(tmp_path, monkeypatch):
    # This process imported unet_tf from the repository, as an installed copy would shadow
    # the kernel's; the setup must not run that code silently.
    monkeypatch.setattr(sys, "path", list(sys.path))
    sources = kaggle.package_sources(config.PROJECT_ROOT)
    with pytest.raises(RuntimeError, match=r"unet_tf was imported from .*restart the kernel"):
        kernel_setup.set_up(sources, "", tmp_path / "input", tmp_path / "working")
    written = tmp_path / "working" / kernel_setup.PACKAGE_FOLDER / "unet_tf"
    assert (written / "kaggle.py").read_text() == sources["kaggle.py"]


def test_prepare_points_the_imported_configuration_at_the_kernel_folders(tmp_path, monkeypatch):
    # prepare sets these in this process. Setting each through monkeypatch first makes it
    # record the variable, so that it is removed (or put back) after the test; a plain
    # delenv of an absent variable records nothing, and prepare's values would leak into
    # every later test.
    names = [f"UNET_TF_{name}_DIR" for name in ("DATA", "MODELS", "REPORTS", "TRAIN", "TEST")]
    for name in [*names, "UNET_TF_VALIDATION_IDS", "UNET_TF_SAMPLE_SUBMISSION"]:
        monkeypatch.setenv(name, "recorded")
        monkeypatch.delenv(name)
    tmp_path = tmp_path.resolve()
    root = tmp_path / "input"
    for name in ("stage1_train", "stage1_test"):
        (root / name).mkdir(parents=True)
    (root / "stage1_sample_submission.csv").write_text("ImageId,EncodedPixels\n")
    kaggle.prepare(root, tmp_path / "working")
    # config was imported long before; its paths follow the environment with no reload.
    assert config.TRAIN_DIR == root / "stage1_train"
    assert config.SAMPLE_SUBMISSION == root / "stage1_sample_submission.csv"
    assert config.MODELS_DIR == tmp_path / "working" / "models"
    assert config.FIGURES_DIR == tmp_path / "working" / "figures"
