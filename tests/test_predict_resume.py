"""``predict`` finishes what it started: a stopped or killed run continues with ``--resume``
to exactly the outputs of an uninterrupted run, and every input is accounted for."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import disc_labels
from PIL import Image

from unet_tf import config, files, interrupt, journal, predict
from unet_tf.__main__ import main as cli

SHAPE = (80, 80)


def disc_image(index: int) -> np.ndarray:
    """An RGB image of ``index + 1`` bright discs on black: each image its own answer."""
    discs = [((15 + 25 * (k // 3), 15 + 25 * (k % 3)), 6 + k % 3) for k in range(index + 1)]
    return np.repeat((disc_labels(SHAPE, discs) > 0)[..., None], 3, -1).astype(np.uint8) * 255


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(5):
        Image.fromarray(disc_image(index)).save(folder / f"image{index}.png")
    return folder


def run(model_path, *arguments):
    return cli(["predict", "--model", str(model_path), "--quiet", *arguments])


def tables(output):
    """The two tables without the time each image took (which differs from run to run)."""
    nuclei = pd.read_csv(output / "nuclei.csv")
    summary = pd.read_csv(output / "summary.csv").drop(columns="seconds")
    return nuclei, summary


def assert_same_outputs(output, reference):
    """Same files (the record aside), same label images and overlays, same tables."""
    names = sorted(path.name for path in output.iterdir())
    assert names == sorted(path.name for path in reference.iterdir())
    for name in names:
        if name.endswith(("_labels.tif", ".png")):
            read = tifffile.imread if name.endswith(".tif") else lambda p: np.asarray(Image.open(p))
            np.testing.assert_array_equal(read(output / name), read(reference / name), err_msg=name)
    for ours, theirs in zip(tables(output), tables(reference), strict=True):
        pd.testing.assert_frame_equal(ours, theirs)


def finished_images(output) -> int:
    record = output / journal.FOLDER / "run.json"
    try:
        return len(json.loads(record.read_text())["finished"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


# A run of predict in a child process, slowed down so that it can be stopped in the middle,
# or killed while it writes the overlay of its second image.
CHILD = """
import os, signal, sys, time
from unet_tf import files, predict
from unet_tf.__main__ import main

segment = predict._segment_plane
def slow(*arguments, **options):
    time.sleep(0.3)
    return segment(*arguments, **options)
predict._segment_plane = slow

if sys.argv[1] == "kill-while-writing":
    write_png, written = predict.write_png, []
    def dying_write_png(path, rgb):
        written.append(path)
        if len(written) == 2:
            with files.atomic_path(path) as partial:
                partial.write_bytes(b"half an overlay")
                os.kill(os.getpid(), signal.SIGKILL)
        write_png(path, rgb)
    predict.write_png = dying_write_png
sys.exit(main(["predict", *sys.argv[2:]]))
"""


def start_child(mode, model_path, inputs, output, tmp_path):
    log = tmp_path / f"{mode}.txt"
    command = [sys.executable, "-c", CHILD, mode, "--model", str(model_path), "--quiet"]
    with log.open("w") as stream:
        child = subprocess.Popen(
            [*command, str(inputs), "-o", str(output)],
            cwd=config.PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stream,
        )
    child.log = log
    return child


@pytest.mark.slow
@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_says_so_in_one_line_and_resume_finishes_it_as_one_run_would(
    disc_model_path, inputs, tmp_path, stop, status
):
    reference = tmp_path / "reference"
    assert run(disc_model_path, str(inputs), "-o", str(reference)) == 0

    output = tmp_path / "out"
    child = start_child("stop", disc_model_path, inputs, output, tmp_path)
    deadline = time.monotonic() + 120
    while finished_images(output) < 1 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(stop)
    assert child.wait(timeout=60) == status
    # Notes on the model aside (no quality estimate beside this one), the stop is one line.
    lines = [line for line in child.log.read_text().splitlines() if not line.startswith("note:")]
    assert "Traceback" not in child.log.read_text()
    assert len(lines) == 1 and lines[0].startswith(f"stopped by {stop.name}: "), lines
    done = finished_images(output)
    assert 1 <= done < 5 and f": {done} of 5 images done" in lines[0]
    assert "--resume" in lines[0]

    # No half-written file, and the tables hold exactly the finished images.
    labelled = sorted(path.name.removesuffix("_labels.tif") for path in output.glob("*.tif"))
    overlaid = sorted(path.name.removesuffix("_overlay.png") for path in output.glob("*.png"))
    assert labelled == overlaid == [f"image{index}" for index in range(done)]
    assert not files.partial_files(output)
    nuclei, summary = tables(output)
    assert list(summary.image) == [f"image{index}.png" for index in range(done)]
    assert sorted(set(nuclei.image)) == list(summary.image)

    # Without --resume the outputs are refused, not overwritten; with it, the run ends as
    # the uninterrupted one did.
    assert run(disc_model_path, str(inputs), "-o", str(output)) == 2
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume") == 0
    assert_same_outputs(output, reference)


@pytest.mark.slow
def test_a_run_killed_while_writing_resumes_to_complete_outputs(
    disc_model_path, inputs, tmp_path, capsys
):
    reference = tmp_path / "reference"
    assert run(disc_model_path, str(inputs), "-o", str(reference)) == 0

    output = tmp_path / "out"
    child = start_child("kill-while-writing", disc_model_path, inputs, output, tmp_path)
    assert child.wait(timeout=120) == -signal.SIGKILL, child.log.read_text()
    # Killed after image1's labels, inside the write of its overlay: the labels are there,
    # a temporary overlay too, and the record holds image0 only.
    assert (output / "image1_labels.tif").exists() and files.partial_files(output)
    assert finished_images(output) == 1

    capsys.readouterr()
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume") == 0
    assert "5 images (1 of them by the run continued)" in capsys.readouterr().out
    assert not files.partial_files(output)
    assert_same_outputs(output, reference)


@pytest.fixture
def counted(monkeypatch):
    """Count the planes segmented; raise a stop at the plane numbered ``stop_at``."""
    calls = {"planes": 0, "stop_at": None}
    segment = predict._segment_plane

    def counting(*arguments, **options):
        calls["planes"] += 1
        if calls["planes"] == calls["stop_at"]:
            raise interrupt.Stopped(signal.SIGINT)
        return segment(*arguments, **options)

    monkeypatch.setattr(predict, "_segment_plane", counting)
    return calls


def test_resume_predicts_only_what_is_missing(disc_model_path, inputs, tmp_path, counted):
    reference = tmp_path / "reference"
    assert run(disc_model_path, str(inputs), "-o", str(reference)) == 0
    output = tmp_path / "out"
    counted["planes"], counted["stop_at"] = 0, 3
    assert run(disc_model_path, str(inputs), "-o", str(output)) == 130
    assert finished_images(output) == 2

    counted["planes"], counted["stop_at"] = 0, None
    # An output of a finished image that went missing is made again, with the rest.
    (output / "image0_overlay.png").unlink()
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume") == 0
    assert counted["planes"] == 4
    assert_same_outputs(output, reference)

    # A finished run with an image added: only that one is predicted.
    counted["planes"] = 0
    Image.fromarray(disc_image(5)).save(inputs / "image5.png")
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume") == 0
    assert counted["planes"] == 1
    assert list(tables(output)[1].image) == [f"image{index}.png" for index in range(6)]


def test_a_stack_continues_from_its_last_finished_plane(disc_model_path, tmp_path, counted):
    stack = np.stack([disc_image(index)[..., 0] for index in range(4)])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    reference = tmp_path / "reference"
    assert run(disc_model_path, str(path), "-o", str(reference)) == 0

    output = tmp_path / "out"
    counted["planes"], counted["stop_at"] = 0, 3
    assert run(disc_model_path, str(path), "-o", str(output)) == 130
    # Nothing of the stack is an output yet; its two finished planes are kept.
    assert sorted(p.name for p in output.iterdir()) == [
        ".unet-tf-predict",
        "nuclei.csv",
        "summary.csv",
    ]
    counted["planes"], counted["stop_at"] = 0, None
    assert run(disc_model_path, str(path), "-o", str(output), "--resume") == 0
    assert counted["planes"] == 2
    assert_same_outputs(output, reference)
    assert not list((output / journal.FOLDER).glob("*.parts"))


def test_a_large_image_continues_from_its_last_finished_block(
    disc_model_path, tmp_path, monkeypatch
):
    from unet_tf import inference

    image = np.concatenate([np.concatenate([disc_image(4)] * 3, 1)] * 2, 0)  # 160 x 240
    path = tmp_path / "large.png"
    Image.fromarray(image).save(path)
    blocks = ["--block-size", "64"]
    reference = tmp_path / "reference"
    assert run(disc_model_path, str(path), "-o", str(reference), *blocks) == 0

    calls = {"blocks": 0, "stop_at": 5}
    predict_block = inference.predict

    def counting(*arguments, **options):
        calls["blocks"] += 1
        if calls["blocks"] == calls["stop_at"]:
            raise interrupt.Stopped(signal.SIGTERM)
        return predict_block(*arguments, **options)

    monkeypatch.setattr(inference, "predict", counting)
    output = tmp_path / "out"
    assert run(disc_model_path, str(path), "-o", str(output), *blocks) == 143
    calls.update(blocks=0, stop_at=None)
    assert run(disc_model_path, str(path), "-o", str(output), *blocks, "--resume") == 0
    assert calls["blocks"] == 3 * 4 - 4  # 12 blocks of 64 pixels; the first 4 were kept.
    assert_same_outputs(output, reference)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--pixel-size", "0.5"], "options.pixel_size: None -> 0.5"),
        (["--tile-size", "32"], "settings.tile_size: 64 -> 32"),
        (["--format", "png"], "options.label_format: tif -> png"),
    ],
)
def test_resume_refuses_other_settings_naming_the_difference(
    disc_model_path, inputs, tmp_path, capsys, arguments, message
):
    output = tmp_path / "out"
    assert run(disc_model_path, str(inputs), "-o", str(output)) == 0
    capsys.readouterr()
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume", *arguments) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert error.startswith("error: ") and message in error and "--overwrite" in error


def test_resume_refuses_outputs_without_a_record_and_overwrite_with_resume(
    disc_model_path, inputs, tmp_path, capsys
):
    output = tmp_path / "out"
    output.mkdir()
    (output / "image0_labels.tif").write_text("written by something else")
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume") == 2
    assert "no record of the run that wrote them" in capsys.readouterr().err
    assert run(disc_model_path, str(inputs), "-o", str(output), "--resume", "--overwrite") == 2
    assert "--resume and --overwrite exclude each other" in capsys.readouterr().err
    assert (output / "image0_labels.tif").read_text() == "written by something else"


def test_every_input_is_done_or_skipped_with_its_reason(disc_model_path, inputs, tmp_path, capsys):
    (inputs / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (inputs / "folder.png").mkdir()
    (inputs / "broken.tif").write_bytes(b"II*\x00 not a TIFF")
    named_link = tmp_path / "named.png"
    named_link.symlink_to(tmp_path / "deleted.png")
    output = tmp_path / "out"
    assert run(disc_model_path, str(inputs), str(named_link), "-o", str(output)) == 1
    error = capsys.readouterr().err
    assert f"skipped: {inputs / 'gone.png'}: a broken link (to {tmp_path / 'nowhere.png'})" in error
    assert f"skipped: {named_link}: a broken link" in error
    assert f"skipped: {inputs / 'folder.png'}: a folder, not an image" in error
    assert f"skipped: {inputs / 'broken.tif'}: cannot read" in error
    assert "4 of 9 images skipped" in error
    assert len(pd.read_csv(output / "summary.csv")) == 5


def test_the_progress_bar_counts_the_images_left_and_their_time(
    disc_model_path, inputs, tmp_path, capsys
):
    output = tmp_path / "out"
    arguments = ["predict", "--model", str(disc_model_path), str(inputs), "-o", str(output)]
    assert cli(arguments) == 0
    assert re.search(r"images: 100%.*\b5/5 \[\d\d:\d\d<\d\d:\d\d", capsys.readouterr().err)
    Image.fromarray(disc_image(5)).save(inputs / "image5.png")
    assert cli([*arguments, "--resume"]) == 0
    assert re.search(r"images: 100%.*\b1/1 \[\d\d:\d\d<\d\d:\d\d", capsys.readouterr().err)


def test_a_stop_waits_for_the_files_that_belong_together(monkeypatch):
    steps = []
    # What SIGINT did before: a background job (CI run with `&`) starts with it ignored.
    before = signal.getsignal(signal.SIGINT)
    with interrupt.stop_on_signals():
        with pytest.raises(interrupt.Stopped) as stopped:
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                steps.append("written after the signal")
        assert steps == ["written after the signal"]
        assert stopped.value.exit_status == 143 and stopped.value.name == "SIGTERM"
        with pytest.raises(interrupt.Stopped):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before


def test_pieces_and_tables_come_back_as_kept(tmp_path):
    parts = journal.Parts(tmp_path / "parts").within("plane-0001")
    table = pd.DataFrame({"image": ["a.png", "a.png"], "label": [1, 2], "area": [3.5, 1e-7]})
    parts.save(
        "block-00002",
        written=np.arange(6, dtype=np.uint32).reshape(2, 3),
        **journal.table_arrays(table, "nuclei"),
    )
    kept = parts.load("block-00002")
    np.testing.assert_array_equal(kept["written"], np.arange(6).reshape(2, 3))
    pd.testing.assert_frame_equal(journal.arrays_table(kept, "nuclei"), table)
    assert parts.load("block-00003") is None
    assert journal.differences({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": 4}) == [
        "b.c: 2 -> 3",
        "d: (none) -> 4",
    ]
