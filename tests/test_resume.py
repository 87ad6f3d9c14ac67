"""Kill a real training run (SIGKILL, mid-epoch) and check that re-running resumes it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import psutil
from conftest import disc, write_sample

from unet_tf import config

TINY = {
    "batch_size": 2,
    "crop_size": 32,
    "depth": 2,
    "base_filters": 4,
    "steps_per_epoch": 40,
    "max_minutes": 10.0,
    "patience": 50,
    "seed": 3,
}


def synthetic_dataset(root):
    """Six 48x48 images of bright discs in the Kaggle layout; two are the validation split."""
    rng = np.random.default_rng(0)
    train_dir = root / "raw" / "stage1_train"
    ids = []
    for index in range(6):
        masks = [disc((48, 48), rng.integers(8, 40, size=2), rng.integers(4, 8)) for _ in range(3)]
        image = np.zeros((48, 48, 3), np.uint8)
        image[np.any(masks, axis=0)] = 200
        image_id = f"synthetic{index}"
        write_sample(train_dir, image_id, image, masks)
        ids.append(image_id)
    split = root / "validation_ids.txt"
    split.write_text("\n".join(ids[:2]) + "\n")
    return split


def start_training(tmp_path, epochs):
    """Start the training notebook in a child process; its output goes to a file (a pipe
    that nobody reads while polling would fill up and block a chatty child)."""
    profile = tmp_path / f"profile-{epochs}.json"
    profile.write_text(json.dumps({"parameters": {**TINY, "epochs": epochs}}))
    env = {
        **os.environ,
        "UNET_TF_DATA_DIR": str(tmp_path / "data"),
        "UNET_TF_VALIDATION_IDS": str(tmp_path / "data" / "validation_ids.txt"),
        "UNET_TF_MODELS_DIR": str(tmp_path / "models"),
        "UNET_TF_REPORTS_DIR": str(tmp_path / "reports"),
    }
    command = [sys.executable, "-m", "unet_tf.report", "--profile", str(profile)]
    log = tmp_path / f"output-{epochs}.txt"
    with log.open("w") as output:
        run = subprocess.Popen(
            [*command, "--only", "02-training"],
            cwd=config.PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    run.output = log  # What the child printed, to read once it is done.
    return run


def test_a_killed_training_run_resumes_from_its_last_complete_epoch(tmp_path):
    synthetic_dataset(tmp_path / "data")
    resume_dir = tmp_path / "models" / "unet.resume"
    run = start_training(tmp_path, epochs=200)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        latest = resume_dir / "latest"
        if latest.is_file() and latest.read_text().strip() >= "epoch-0002":
            break
        time.sleep(0.2)
    else:
        run.kill()
        run.wait()
        raise AssertionError(
            f"no checkpoint of epoch 2 appeared:\n{run.output.read_text()[-3000:]}"
        )
    time.sleep(0.5)  # Into the next epoch.
    # The Jupyter kernel runs in a session of its own: kill it and its parent, as an
    # out-of-memory killer or a power cut would, with no chance to clean up.
    parent = psutil.Process(run.pid)
    victims = [*parent.children(recursive=True), parent]
    for victim in victims:
        victim.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=30)
    run.wait()
    killed_at = json.loads(
        (resume_dir / (resume_dir / "latest").read_text().strip() / "state.json").read_text()
    )["epochs_completed"]
    assert killed_at >= 2 and not (tmp_path / "models" / "unet.keras").exists()

    total = killed_at + 2
    rerun = start_training(tmp_path, epochs=total)
    rerun.wait(timeout=600)
    assert rerun.returncode == 0, rerun.output.read_text()[-3000:]
    executed = (tmp_path / "reports" / "02-training.ipynb").read_text()
    assert f"resuming after epoch {killed_at}" in executed
    log = pd.read_csv(tmp_path / "models" / "unet.log.csv")
    assert list(log.epoch) == list(range(total))  # Every epoch once, none repeated or lost.
    record = json.loads((tmp_path / "models" / "unet.json").read_text())
    assert record["epochs_trained"] == total
    assert not resume_dir.exists()  # Cleared once the model is saved.
