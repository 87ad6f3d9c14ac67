"""``python -m unet_tf.report`` on small stand-in notebooks: failures and up-to-date stamps.

The real notebooks take minutes (see test_notebooks.py); these take seconds, so the
report's own behaviour is checked here: how a notebook whose kernel dies ends, and what
makes a notebook run again.
"""

import json
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from conftest import printed_outputs

from unet_tf import config, report


def stand_in(folder, name, *sources):
    """Write a notebook ``folder/name.ipynb`` with one code cell per source, on our kernel."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.metadata["kernelspec"] = {
        "name": report.KERNEL_NAME,
        "display_name": "Python (unet-tf)",
        "language": "python",
    }
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / f"{name}.ipynb")


def run_report(tmp_path, notebooks, *args, env=None, timeout=300):
    """Run the report command on the notebooks of ``notebooks``, outputs under ``tmp_path``.

    ``env`` adds variables to the environment, or removes those it maps to None.
    """
    profile = tmp_path / "profile.json"
    if not profile.exists():
        profile.write_text(json.dumps({"parameters": {}}))
    env = {
        **os.environ,
        "UNET_TF_MODELS_DIR": str(tmp_path / "models"),
        "UNET_TF_REPORTS_DIR": str(tmp_path / "reports"),
        **(env or {}),
    }
    env = {name: value for name, value in env.items() if value is not None}
    command = [sys.executable, "-m", "unet_tf.report", "--notebooks", str(notebooks)]
    return subprocess.run(
        [*command, "--profile", str(profile), *args],
        cwd=config.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_a_notebook_whose_kernel_dies_fails_with_its_name_and_no_traceback(tmp_path):
    notebooks = tmp_path / "notebooks"
    stand_in(notebooks, "01-fine", "print('fine')")
    # SIGKILL, as the out-of-memory killer sends it: the kernel gets no chance to answer.
    stand_in(
        notebooks,
        "02-dies",
        "print('before the kill')",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "print('never')",
    )
    result = run_report(tmp_path, notebooks)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "[report] FAILED: notebook 02-dies (" in result.stderr
    assert "kernel died" in result.stderr
    assert "Traceback" not in output
    reports = tmp_path / "reports"
    assert not (reports / ".running").exists()
    # The partial copy is kept under a name that cannot pass for a report.
    failed = nbformat.read(reports / "02-dies.failed.ipynb", as_version=4)
    assert "before the kill" in failed.cells[0].outputs[0]["text"]
    assert not (reports / "02-dies.ipynb").exists()
    # The notebook before it succeeded and its stamp was saved: a rerun skips it.
    assert (reports / "01-fine.ipynb").is_file()
    stamps = json.loads((reports / report.STAMPS_FILE).read_text())
    assert set(stamps["notebooks"]) == {"01-fine"}


@pytest.mark.slow
def test_the_report_shows_no_cuda_probes_nor_kernel_transport_warnings(tmp_path):
    notebooks = tmp_path / "notebooks"
    stand_in(
        notebooks,
        "01-tensorflow",
        "import unet_tf\nimport tensorflow as tf",
        "print(tf.config.list_physical_devices('GPU'))",
    )
    # As a user's shell has it: without the variables conftest sets to quiet TensorFlow.
    quiet = {"CUDA_VISIBLE_DEVICES": None, "TF_CPP_MIN_LOG_LEVEL": None}
    result = run_report(tmp_path, notebooks, env=quiet)
    assert result.returncode == 0, result.stderr
    executed_path = tmp_path / "reports" / "01-tensorflow.ipynb"
    executed = executed_path.read_text()
    # The notebook ran, and found no GPU: the one thing it printed is an empty list.
    assert [text.strip() for text in printed_outputs(executed_path)] == ["[]"]
    # tensorflow-cpu has no CUDA parts to probe (requirements.txt); the kernel's connection
    # is encrypted (report.kernel_config). Whole phrases: the test's folder has "cuda" in it.
    for phrase in ("Could not find cuda drivers", "cuInit", "CUDA error", "without encryption"):
        for text in (result.stdout, result.stderr, executed):
            assert phrase not in text


def test_unknown_notebooks_folder_is_refused_with_its_name(tmp_path):
    result = run_report(tmp_path, tmp_path / "nowhere", timeout=120)
    assert result.returncode == 2
    assert "nowhere: no such notebooks folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_changing_the_validation_split_reruns_training_and_results(tmp_path):
    notebooks = tmp_path / "notebooks"
    stand_in(notebooks, "02-training", "print('training')")
    stand_in(notebooks, "03-results", "print('results')")
    split = tmp_path / "validation_ids.txt"
    shutil.copy(config.VALIDATION_IDS, split)
    env = {"UNET_TF_VALIDATION_IDS": str(split)}

    first = run_report(tmp_path, notebooks, env=env)
    assert first.returncode == 0, first.stderr
    assert "02-training done" in first.stdout and "03-results done" in first.stdout, first
    same = run_report(tmp_path, notebooks, env=env)
    assert same.returncode == 0, same.stderr
    assert same.stdout.count("is up to date") == 2, same

    ids = split.read_text().splitlines()
    split.write_text("\n".join(ids[1:]) + "\n")
    changed = run_report(tmp_path, notebooks, env=env)
    assert changed.returncode == 0, changed.stderr
    assert "is up to date" not in changed.stdout, changed
    assert "02-training done" in changed.stdout and "03-results done" in changed.stdout, changed


def test_the_shared_inputs_digest_follows_split_profile_and_requirements(tmp_path, monkeypatch):
    files = {}
    for name in ("validation_ids.txt", "profile.json", "requirements.txt"):
        files[name] = tmp_path / name
        files[name].write_text(f"{name} as it was\n")
    # config reads its paths from the environment each time (setting the attribute would
    # leave a stale copy behind that outlives this test).
    monkeypatch.setenv("UNET_TF_VALIDATION_IDS", str(files["validation_ids.txt"]))
    assert config.VALIDATION_IDS == files["validation_ids.txt"]
    monkeypatch.setattr(report, "REQUIREMENTS", files["requirements.txt"])
    digest = report.inputs_digest(files["profile.json"])
    assert report.inputs_digest(files["profile.json"]) == digest
    for path in files.values():
        before = path.read_text()
        path.write_text(before + "changed\n")
        assert report.inputs_digest(files["profile.json"]) != digest, path.name
        path.write_text(before)
    assert report.inputs_digest(files["profile.json"]) == digest


def test_a_notebook_stamp_changes_with_the_shared_inputs(tmp_path):
    stand_in(tmp_path, "02-training", "print('training')")
    notebook = tmp_path / "02-training.ipynb"
    stamp = report.notebook_stamp(notebook, {"epochs": 1}, "upstream", "inputs")
    assert report.notebook_stamp(notebook, {"epochs": 1}, "upstream", "inputs") == stamp
    assert report.notebook_stamp(notebook, {"epochs": 1}, "upstream", "other") != stamp
