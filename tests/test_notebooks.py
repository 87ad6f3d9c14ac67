"""The notebooks and `make report`: hygiene of the committed notebooks, profiles, smoke run."""

import ast
import html
import json

import nbformat
import pandas as pd
import pytest
from conftest import printed_outputs, run_report

from unet_tf import config, data, report, submission

NOTEBOOKS = sorted((config.PROJECT_ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
COMMON = {"max_images", "seed"}


REPORTED = [nb for nb in NOTEBOOKS if report.in_default_run(nb)]


def test_the_notebooks_exist_in_run_order_and_the_viewer_is_left_out_of_make_report():
    assert [nb.stem for nb in NOTEBOOKS] == [
        "01-exploration",
        "02-training",
        "03-results",
        "04-submission",
        "05-viewer",
        "06-semantic-results",
    ]
    assert [nb.stem for nb in REPORTED] == [nb.stem for nb in NOTEBOOKS[:4]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_one_parameters_cell_after_the_imports(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    tagged = [i for i, cell in enumerate(code) if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == [1], "one parameters cell, the second code cell (after the imports)"
    imports = ast.parse(code[0].source).body
    assert all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in imports)
    names = set()
    for line, node in zip(code[1].source.splitlines(), ast.parse(code[1].source).body, strict=True):
        # Literal, type-annotated defaults, each with an inline comment.
        assert isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant), line
        assert "  # " in line, f"no inline comment: {line}"
        names.add(node.target.id)
    assert COMMON <= names
    assert notebook.metadata["kernelspec"]["name"] == report.KERNEL_NAME


def test_profiles_only_name_parameters_the_notebooks_declare():
    for profile_path in report.PROFILES_DIR.glob("*.json"):
        chosen = report.notebook_parameters(NOTEBOOKS, report.load_profile(profile_path.stem))
        assert set(chosen) == {nb.stem for nb in NOTEBOOKS}


def test_profile_mistakes_are_refused(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="no notebook declares"):
        report.notebook_parameters(NOTEBOOKS, {"parameters": {"epochz": 1}, "overrides": {}})
    bad_override = {"parameters": {}, "overrides": {"01-exploration": {"epochs": 1}}}
    with pytest.raises(ValueError, match="does not declare"):
        report.notebook_parameters(NOTEBOOKS, bad_override)
    with pytest.raises(FileNotFoundError, match="choose one of"):
        report.load_profile("no-such-profile")


needs_data = pytest.mark.skipif(
    not (config.TRAIN_DIR.is_dir() and config.TEST_DIR.is_dir()),
    reason="DSB2018 is not unpacked (run `make data`)",
)


@pytest.mark.slow
@needs_data
def test_smoke_profile_runs_every_notebook_and_writes_the_reports(tmp_path):
    result = run_report(tmp_path, "--profile", "smoke")
    assert result.returncode == 0, result.stderr[-3000:]
    reports = tmp_path / "reports"
    for notebook in REPORTED:
        assert (reports / f"{notebook.stem}.ipynb").is_file()
        # The HTML shows what the notebook printed (an empty notebook's HTML is large too:
        # nbconvert inlines its style sheet).
        executed = reports / f"{notebook.stem}.ipynb"
        assert printed_outputs(executed), f"{notebook.stem} showed nothing"
        page = (reports / f"{notebook.stem}.html").read_text(encoding="utf-8")
        for text in printed_outputs(executed, streams_only=True):
            first = next((line.strip() for line in text.splitlines() if line.strip()), "")
            assert html.escape(first, quote=False) in page, (notebook.stem, first)
    # Neither the reports nor the command's output carry TensorFlow's CUDA probes or the
    # kernel's warning about unencrypted TCP (see test_report.py).
    executed = [(reports / f"{nb.stem}.ipynb").read_text() for nb in REPORTED]
    for phrase in ("Could not find cuda drivers", "cuInit", "without encryption"):
        assert not any(phrase in text for text in [result.stdout, result.stderr, *executed]), phrase
    for figure in [
        "01-samples.png",
        "02-learning-curves.png",
        "03-threshold-sweep.png",
        "03-best-and-worst.png",
        "04-submission-preview.png",
    ]:
        assert (reports / "figures" / figure).is_file(), figure
    for name in ["unet.keras", "unet.json", "unet.log.csv", "unet.quality.json"]:
        assert (tmp_path / "models" / name).is_file(), name
    # 03 judged the quality estimate source by source, with TTA and without.
    assert set(json.loads((reports / "quality.json").read_text())) == {"TTA", "no TTA"}
    # 04 used it: the test images' expected scores beside the submission.
    assert len(pd.read_csv(reports / "quality.csv")) == 65
    record = json.loads((tmp_path / "models" / "unet.json").read_text())
    assert record["parameters"]["epochs"] == 2 and "tensorflow" in record["environment"]
    metrics = json.loads((reports / "metrics.json").read_text())
    for key in ["dsb_score", "pixel_iou", "dice", "epochs_trained", "postprocess", "ablation"]:
        assert key in metrics
    assert metrics["validation_images"] == 6
    # The submission covers every stage 1 test image and passes the validator.
    shapes = {
        image_id: image.shape[:2]
        for image_id, image, _ in data.load_samples(config.TEST_DIR, with_labels=False)
    }
    assert len(shapes) == 65
    check = submission.validate_submission(reports / "submission.csv", shapes)
    assert check["images"] == 65
    assert set(pd.read_csv(reports / "submission.csv").ImageId) == set(shapes)
    summary = (reports / "summary.md").read_text()
    assert "02-training" in summary and "DSB score" in summary
    timings = json.loads((reports / "timings.json").read_text())
    assert set(timings["seconds"]) == {nb.stem for nb in REPORTED}
    assert not (reports / ".running").exists()

    # A second run does nothing expensive; a lost output reruns only what makes it.
    again = run_report(tmp_path, "--profile", "smoke")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("is up to date") == 4
    (reports / "submission.csv").unlink()
    third = run_report(tmp_path, "--profile", "smoke")
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.count("is up to date") == 3 and "04-submission done" in third.stdout
    assert (reports / "submission.csv").is_file()

    # The viewer runs headless when asked for, on the model the smoke run trained.
    viewer = run_report(tmp_path, "--profile", "smoke", "--only", "05-viewer")
    assert viewer.returncode == 0, viewer.stderr[-3000:]
    assert (reports / "05-viewer.html").is_file()


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"epochs": -1}, "must be positive"),
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"crop_size": 4096, "max_images": 3}, "larger than every training image"),
    ],
    ids=["negative-epochs", "unknown-loss", "crop-too-large"],
)
def test_a_bad_parameter_stops_training_before_it_starts_and_names_the_notebook(
    tmp_path, parameters, message
):
    profile = tmp_path / "bad.json"
    profile.write_text(json.dumps({"parameters": parameters}))
    result = run_report(tmp_path, "--profile", str(profile), "--only", "02-training")
    assert result.returncode == 1
    assert "02-training" in result.stderr and message in result.stderr
    assert not (tmp_path / "models" / "unet.keras").exists()
    # The failed notebook is kept for inspection under a name that cannot pass for a report.
    assert (tmp_path / "reports" / "02-training.failed.ipynb").is_file()
    assert not (tmp_path / "reports" / "02-training.ipynb").exists()


def test_unknown_profile_exits_with_a_message(tmp_path):
    result = run_report(tmp_path, "--profile", "nope", timeout=120)
    assert result.returncode == 2
    assert "choose one of" in result.stderr and "Traceback" not in result.stderr
