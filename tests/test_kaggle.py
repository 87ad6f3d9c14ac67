"""``make kaggle``: the generated kernel runs on a fake /kaggle tree, writes a valid submission."""

import json
import re
import shutil
import zipfile

import nbformat
import numpy as np
import pandas as pd
import papermill
import pytest
from conftest import disc, write_sample

from unet_tf import config, data, kaggle, report, submission

SMOKE = {
    "epochs": 1,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "crop_size": 32,
    "depth": 2,
    "base_filters": 4,
    "max_minutes": 5.0,
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


def test_the_kernel_trains_on_folders_then_predicts_from_zips_with_an_attached_model(
    kernel, tmp_path
):
    trained = run_kernel(kernel, tmp_path / "folders", zipped=False)
    models = trained / "models"
    assert (models / "unet.keras").is_file() and (models / "unet.log.csv").is_file()
    assert (models / "unet.inference.json").is_file()

    attached = tmp_path / "attached-dataset"
    attached.mkdir()
    for name in ("unet.keras", "unet.inference.json"):
        shutil.copy(models / name, attached / name)
    predicted = run_kernel(kernel, tmp_path / "zips", zipped=True, model_dir=str(attached))
    assert not (predicted / "models" / "unet.log.csv").exists()  # Nothing was trained.
    executed = (tmp_path / "zips" / "executed.ipynb").read_text()
    assert "unpacking" in executed


def test_the_kernel_is_one_self_contained_notebook_of_this_commit(kernel):
    notebook = nbformat.read(kernel / kaggle.KERNEL_FILE, as_version=4)
    nbformat.validate(notebook)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in notebook.cells[1].metadata["tags"]
    for name in ("input_root", "output_root", "model_dir", "epochs", "tta", "max_images"):
        assert re.search(rf"^{name}: ", code[0], re.MULTILINE), name
    assert '"/kaggle/input/data-science-bowl-2018"' in code[0]
    # Every module of the package travels in the kernel, exactly as in the repository.
    for path in (config.PROJECT_ROOT / "unet_tf").glob("*.py"):
        assert json.dumps(path.read_text()) in code[1], path.name
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
