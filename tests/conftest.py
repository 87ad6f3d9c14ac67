"""Shared fixtures: synthetic discs with known answers and Kaggle-layout sample folders."""

import os

# Keep TensorFlow quiet and on the CPU in tests; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A U-Net small enough to train in seconds: the training parameters the tests share.
# The precision is pinned: "auto" would take another code path on CPUs with AMX units
# (test_train runs each path explicitly).
TINY_TRAINING = {
    "precision": "float32",
    "epochs": 2,
    "steps_per_epoch": 2,
    "batch_size": 2,
    "crop_size": 32,
    "depth": 2,
    "base_filters": 4,
    "max_minutes": 5.0,
}


def pytest_addoption(parser):
    parser.addoption(
        "--order",
        default="file",
        help="order of the tests: 'file' (as written), 'reversed', or 'random' / "
        "'random:SEED' (shuffled; the seed is printed so that a failing order can be re-run)",
    )


def pytest_collection_modifyitems(config, items):
    """Run the tests in the order ``--order`` asks for: a test that passes only after
    another one (a global left set, a file left behind) fails in another order."""
    import random

    order = config.getoption("--order")
    if order == "file":
        return
    if order == "reversed":
        items.reverse()
    elif order == "random" or order.startswith("random:"):
        seed = int(order.partition(":")[2] or random.SystemRandom().randrange(10**6))
        random.Random(seed).shuffle(items)
        config._unet_tf_order = f"random:{seed}"
    else:
        raise pytest.UsageError(f"--order must be file, reversed or random[:SEED], got {order!r}")


def pytest_report_header(config):
    order = config.getoption("--order")
    return f"test order: {order}" if order != "random" else None


def pytest_terminal_summary(terminalreporter, config):
    shuffled = getattr(config, "_unet_tf_order", None)
    if shuffled:
        terminalreporter.write_line(f"test order: --order={shuffled}")


@pytest.fixture(autouse=True)
def _keep_the_precision_policy():
    """Restore Keras's global precision policy after each test: ``train()`` sets it, and a
    test that leaves ``mixed_bfloat16`` behind would change every later test in the run
    (and which ones depends on their order)."""
    import sys

    keras = sys.modules.get("keras")
    before = keras.mixed_precision.global_policy().name if keras else "float32"
    yield
    keras = sys.modules.get("keras")
    if keras and keras.mixed_precision.global_policy().name != before:
        keras.mixed_precision.set_global_policy(before)


def run_report(tmp_path, *args, timeout=900):
    """Run ``python -m unet_tf.report`` with models and reports under ``tmp_path``."""
    import subprocess
    import sys

    from unet_tf import config

    env = {
        **os.environ,
        "UNET_TF_MODELS_DIR": str(tmp_path / "models"),
        "UNET_TF_REPORTS_DIR": str(tmp_path / "reports"),
    }
    return subprocess.run(
        [sys.executable, "-m", "unet_tf.report", *args],
        cwd=config.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def printed_outputs(notebook_path, streams_only: bool = False) -> list[str]:
    """The text a run notebook's cells printed or returned, one string per output.

    Only outputs, never cell sources or metadata: a phrase in the code (or the word
    ``"outputs": []`` of every cell) cannot stand in for what the notebook showed. With
    ``streams_only``, only what was printed (a table's plain text, which the HTML shows as
    a table, is left out).
    """
    import json

    notebook = json.loads(Path(notebook_path).read_text(encoding="utf-8"))
    texts = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if streams_only and output["output_type"] != "stream":
                continue
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            texts.append("".join(text) if isinstance(text, list) else text)
    return texts


def disc(shape, centre, radius) -> np.ndarray:
    """A boolean disc of ``radius`` pixels around ``centre`` (row, column)."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def disc_labels(shape, discs) -> np.ndarray:
    """Instance labels 1..N for a list of ``(centre, radius)`` discs (later discs on top)."""
    labels = np.zeros(shape, np.int32)
    for value, (centre, radius) in enumerate(discs, start=1):
        labels[disc(shape, centre, radius)] = value
    return labels


def write_sample(root: Path, image_id: str, image: np.ndarray, masks=()) -> Path:
    """Write a Kaggle-layout sample folder with ``image`` and one PNG per boolean mask."""
    sample = root / image_id
    (sample / "images").mkdir(parents=True)
    Image.fromarray(image).save(sample / "images" / f"{image_id}.png")
    if masks is not None:
        (sample / "masks").mkdir()
        for index, mask in enumerate(masks):
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                sample / "masks" / f"m{index:03d}.png"
            )
    return sample


@pytest.fixture
def disc_sample(tmp_path):
    """A 64x80 fluorescence-like RGBA sample with three known discs; returns (folder, labels)."""
    shape = (64, 80)
    discs = [((20, 20), 8), ((40, 55), 10), ((50, 15), 5)]
    labels = disc_labels(shape, discs)
    image = np.zeros((*shape, 4), np.uint8)
    image[..., :3] = np.where(labels[..., None] > 0, 200, 10)
    image[..., 3] = 255
    masks = [labels == value for value in range(1, len(discs) + 1)]
    return write_sample(tmp_path / "stage1_train", "sample0", image, masks), labels


@pytest.fixture(scope="session")
def disc_model_path(tmp_path_factory):
    """A model that marks bright pixels, so the nuclei found are exactly the discs drawn.

    Its one 1x1 convolution gives sigmoid(20 * mean(RGB) - 10): near 1 on the discs and
    near 0 on the black background. The tuned settings beside it use tiles smaller than the
    images, so the tiled path is the one exercised.
    """
    import keras
    from keras import layers

    from unet_tf import inference

    inputs = keras.Input((None, None, 3))
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="threshold")(inputs)
    net = keras.Model(inputs, outputs)
    net.get_layer("threshold").set_weights(
        [np.full((1, 1, 3, 1), 20 / 3, np.float32), np.array([-10.0], np.float32)]
    )
    path = tmp_path_factory.mktemp("model") / "discs.keras"
    net.save(path)
    postprocess = {"method": "components", "threshold": 0.5, "min_area": 5}
    inference.write_settings(path, postprocess, tta=False, tile_size=64)
    return path


@pytest.fixture
def disc_folder(tmp_path):
    """Six fluorescence-like 48x64 images of 2-4 discs each, and a split of two images.

    Returns the Kaggle-layout folder and the validation id list.
    """
    from unet_tf import data

    rng = np.random.default_rng(3)
    root = tmp_path / "train"
    for index in range(6):
        discs = [
            ((int(rng.integers(8, 40)), int(rng.integers(8, 56))), int(rng.integers(4, 8)))
            for _ in range(int(rng.integers(2, 5)))
        ]
        labels = disc_labels((48, 64), discs)
        image = np.where(labels[..., None] > 0, 200, 15).astype(np.uint8).repeat(3, axis=-1)
        masks = [labels == value for value in np.unique(labels)[1:]]
        write_sample(root, f"img{index}", image, masks)
    ids = tmp_path / "validation_ids.txt"
    data.save_ids(ids, ["img4", "img5"])
    return root, ids
