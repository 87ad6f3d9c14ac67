"""Smoke runs of every script in benchmarks/: each runs as a user runs it, tiny (``--quick``),
in a child process with its models and reports under the test's folder, and must print
the table it promises, with numbers in it. A change of the library's defaults that breaks a
benchmark fails here rather than in the next ``make bench`` or a day-long measurement.

They read the real DSB2018 training images (``make data``) and skip where they are absent.
"""

import json
import math
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_TRAINING, disc_labels

from unet_tf import config

BENCHMARKS = config.PROJECT_ROOT / "benchmarks"
# The held-out group of benchmarks/fine_tune.py by default: the tiny base model never sees it.
FINE_TUNE_GROUP = "stained 320x256"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not config.TRAIN_DIR.is_dir(), reason="DSB2018 is not unpacked (run `make data`)"
    ),
    # Six stage1_train images have 1-2 pixels claimed by two masks: known and documented.
    pytest.mark.filterwarnings("ignore::unet_tf.data.MaskWarning"),
]


def run_benchmark(tmp_path, script: str, *args: str, timeout: float = 300):
    """Run ``benchmarks/<script> args`` from the project root with models and reports
    under ``tmp_path``; fail with the end of its messages unless it exits with 0."""
    env = {
        **os.environ,
        "UNET_TF_MODELS_DIR": str(tmp_path / "models"),
        "UNET_TF_REPORTS_DIR": str(tmp_path / "reports"),
    }
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        cwd=config.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"{script} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def markdown_rows(text: str) -> list[dict]:
    """The rows of the last Markdown table in ``text`` (``evaluation.markdown_table``'s
    layout), as dicts of cell strings by column name."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    assert tables, f"no Markdown table in:\n{text[-2000:]}"
    header, rule, *rows = tables[-1]
    assert set("".join(rule)) <= set("-"), f"not a Markdown table: {rule}"
    assert all(len(row) == len(header) for row in rows), tables[-1]
    return [dict(zip(header, row, strict=True)) for row in rows]


def score(cell: str) -> float:
    """A table cell that must hold a score in [0, 1]."""
    value = float(cell)
    assert math.isfinite(value) and 0.0 <= value <= 1.0, cell
    return value


def positive(value) -> float:
    """A number that must be finite and above zero (a rate, a time)."""
    value = float(value)
    assert math.isfinite(value) and value > 0, value
    return value


def group_ids(group: str) -> list[str]:
    """The training images of a group (``stained 320x256``: imaging type and size), as the
    benchmarks name them; only the images of that size are decoded."""
    from PIL import Image

    from unet_tf import data

    kind, size = group.split(" ")
    sized = []
    for folder in data.list_sample_dirs(config.TRAIN_DIR):
        with Image.open(data.image_file(folder)) as image:
            if "{}x{}".format(*image.size) == size:
                sized.append(folder.name)
    index = data.build_index(config.TRAIN_DIR, with_labels=False, ids=sized)
    return sorted(index.image_id[index.imaging_type == kind])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny U-Net of the default recipe, trained on a few images without the stained
    group that ``fine_tune.py`` holds out, and tuned as ``03-results`` tunes (without TTA):
    what ``error_anatomy.py``, ``scale_check.py`` and ``fine_tune.py`` expect of a model.

    It trains for 30 steps of 64-pixel crops, more than ``TINY_TRAINING``'s 4: for about the
    same time (building the pipeline and compiling dominate) it learns enough to find
    nuclei, so that the automatic rescaling estimates sizes near 1x instead of enlarging
    every image 4x, which would make every benchmark of it several times slower.
    """
    from unet_tf import evaluation, training

    excluded = group_ids(FINE_TUNE_GROUP)
    assert len(excluded) > 100
    recipe = replace(
        training.TrainingConfig(**TINY_TRAINING),
        epochs=3,
        steps_per_epoch=10,
        crop_size=64,
        batch_size=4,
        learning_rate=0.01,
        max_images=6,
        model_name="tiny",
    )
    models_dir = tmp_path_factory.mktemp("tiny-model")
    result = training.train(
        recipe, models_dir=models_dir, resume=False, verbose=0, exclude_ids=excluded
    )
    record = training.read_run_record(result.paths["record"])
    tuning = evaluation.tune(
        result.model,
        evaluation.validation_samples(2),
        tta=False,
        nucleus_diameter=record["nucleus_diameter"],
    )
    evaluation.save_tuning(tuning, result.paths["model"], tile_size=1024, record=record)
    return result.paths["model"]


def test_ablation_table_has_a_row_per_recipe(tmp_path):
    # Every piece off: generalization.py's smoke run trains the default with all of them on.
    recipes = ["previous (all pieces off)"]
    done = run_benchmark(tmp_path, "ablation.py", "--quick", "--only", *recipes)
    rows = markdown_rows(done.stdout)
    assert [row["recipe"] for row in rows if row["automatic rescaling"] == "on"] == recipes
    for row in rows:
        assert row["epochs"] == "2"  # The smoke profile's budget, run in full.
        for column in ("DSB", "type-balanced", "F1@0.5"):
            score(row[column])
        assert row["post-processing"]
    saved = json.loads((tmp_path / "reports" / "ablation-quick.json").read_text())
    assert len(saved["rows"]) == len(rows)


def test_error_anatomy_takes_every_image_set_and_the_specialist_apart(tmp_path, tiny_model):
    # Two validation images: segmenting them, with the size estimate, is most of the time.
    done = run_benchmark(
        tmp_path, "error_anatomy.py", "--quick", "--max-images", "2", "--model", str(tiny_model)
    )
    rows = markdown_rows(done.stdout)
    sets = {(row["model"], row["images"]) for row in rows}
    assert sets == {
        ("model", "validation"),
        ("model", "training"),
        ("stained specialist", "validation"),
        ("stained specialist", "training"),
    }
    # One training image of each imaging type, and the two validation images.
    training_types = [r["imaging_type"] for r in rows if r["images"] == "training"]
    assert sorted(training_types[:3]) == ["brightfield", "fluorescence", "stained"]
    validation = [r for r in rows if r["model"] == "model" and r["images"] == "validation"]
    assert sum(int(row["count"]) for row in validation) == 2
    for row in rows:
        assert int(row["true"]) > 0
        for column in ("dsb", "found@0.5", "found@0.9", "dsb_without_lone", "dsb_true_outlines"):
            score(row[column])
        assert float(row["dsb_true_outlines"]) >= float(row["dsb"])
    saved = json.loads((tmp_path / "reports" / "error_anatomy-quick.json").read_text())
    assert len(saved["rows"]) == len(rows)
    assert (tmp_path / "models" / "error_anatomy-quick" / "specialist-stained.keras").is_file()


def test_fine_tune_scores_the_model_before_and_after(tmp_path, tiny_model):
    done = run_benchmark(
        tmp_path, "fine_tune.py", "--quick", "--max-images", "2", "--base", str(tiny_model)
    )
    rows = markdown_rows(done.stdout)
    assert [row["model"] for row in rows] == ["before (default model)", "after fine-tuning"]
    columns = list(rows[0])[1:]
    # The group's DSB and F1, and the validation split's DSB, each naming its image count.
    assert [c.split(" (")[0] for c in columns] == [
        f"{FINE_TUNE_GROUP} DSB",
        f"{FINE_TUNE_GROUP} F1@0.5",
        "validation split DSB",
    ]
    assert f"{FINE_TUNE_GROUP} DSB (2 images)" in columns
    for row in rows:
        for column in columns:
            score(row[column])
    saved = json.loads((tmp_path / "reports" / "fine_tune-quick.json").read_text())
    assert len(saved["fine_tuning_ids"]) == 2 and saved["epochs"] == 1


def test_generalization_scores_every_held_out_group_per_recipe(tmp_path):
    # Groups of small images, one scored of each, tuned on two validation images: a
    # smoke-trained model's first size estimate enlarges images 4x (a 1024x1024 brightfield
    # image takes 15 s then).
    groups = ["fluorescence 347x260", "stained 320x256"]
    done = run_benchmark(
        tmp_path,
        "generalization.py",
        "--quick",
        "--only",
        "default",
        "--groups",
        *groups,
        "--max-scored",
        "1",
        "--max-images",
        "2",
        "--enlarge",
        "2",
    )
    rows = markdown_rows(done.stdout)
    names = [row["held-out group"] for row in rows]
    # The stained group also at twice its size.
    assert names[:3] == [*groups, "stained 320x256 at 2x"]
    assert names[3:] == [
        "validation split (without the groups): dsb_score",
        "validation split (without the groups): type_balanced_dsb_score",
    ]
    for row in rows:
        score(row["default DSB"])
    for row in rows[:3]:
        assert row["images"] == "1"
        score(row["default F1@0.5"])
    saved = json.loads((tmp_path / "reports" / "generalization-quick.json").read_text())
    assert list(saved["results"]) == ["default"]
    # Every image of the groups was held out, not only those scored.
    record = tmp_path / "models" / "generalization-quick" / "generalization-default.json"
    assert len(json.loads(record.read_text())["excluded_ids"]) == 3 + 107
    assert (tmp_path / "models" / "generalization-quick" / "generalization-default.keras").is_file()


def test_large_image_finds_every_disc_once_across_block_seams(tmp_path, disc_model_path):
    done = run_benchmark(tmp_path, "large_image.py", "--quick", "--model", str(disc_model_path))
    (row,) = markdown_rows(done.stdout)
    assert row["side"] == "1200" and row["TTA"] == "no"
    discs = int(row["discs"].replace(",", ""))
    assert discs == (1200 // 30) ** 2
    # The model marks exactly the bright discs: every one must come out once, whole, also
    # where 512-pixel blocks meet.
    assert int(row["nuclei"].replace(",", "")) == discs
    assert int(row["found once"].replace(",", "")) == discs
    on_seams, found = row["on seams (found once)"].replace(",", "").rstrip(")").split(" (")
    assert int(on_seams) > 0 and found == on_seams
    positive(row["peak GB"])


def test_pipeline_names_the_default_training_path_and_the_rates(tmp_path):
    from unet_tf import training

    done = run_benchmark(tmp_path, "pipeline.py", "--quick")
    precision, jit_compile = training.resolve_speed(training.TrainingConfig())
    path = f"{precision}{', XLA' if jit_compile else ''}"
    assert f"default training path on this machine: {path}\n" in done.stdout
    expected = [
        "training step (smoke U-Net)",
        "pipeline, default recipe",
        "pipeline, + affine and elastic",
    ]
    lines = done.stdout.split("\nwhat", 1)[1].splitlines()[1 : 1 + len(expected)]
    assert [line.rsplit(None, 2)[0] for line in lines] == expected
    for line in lines:
        crops, ratio = line.rsplit(None, 2)[1:]
        positive(crops), positive(ratio)
    assert "the slowest pipeline is" in done.stdout


def test_scale_check_scores_each_factor_with_and_without_rescaling(tmp_path, tiny_model):
    done = run_benchmark(tmp_path, "scale_check.py", "--quick", "--model", str(tiny_model))
    rows = markdown_rows(done.stdout)
    assert [float(row["factor"]) for row in rows] == [0.5, 2.0]
    for row in rows:
        score(row["DSB, automatic scale"])
        score(row["DSB, no rescaling"])
        assert "fluorescence, automatic scale" in row
        score(row["size within 1.3"])
    saved = json.loads((tmp_path / "reports" / "scale_check-quick.json").read_text())
    assert saved["images"] == 6 and saved["tta"] is False


def test_starter_recipe_trains_and_scores(tmp_path):
    run_benchmark(tmp_path, "starter_recipe.py", "--quick")
    result = json.loads((tmp_path / "reports" / "starter_recipe-quick.json").read_text())
    assert result["epochs_trained"] == 1 and result["validation_images"] == 6
    for name in ("dsb_score", "pixel_iou", "dice"):
        score(result[name])


def test_throughput_times_the_default_training_path(tmp_path):
    from unet_tf import training

    options = ["--crop", "64", "--batch", "2", "--side", "256", "--test-images", "1"]
    done = run_benchmark(tmp_path, "throughput.py", "--quick", *options, "--variants")
    result = json.loads((tmp_path / "reports" / "benchmarks.json").read_text())
    precision, jit_compile = training.resolve_speed(training.TrainingConfig())
    default = ("xla" if jit_compile else "no_xla") + (
        "" if precision == "float32" else f"_{precision}"
    )
    model = result["default_model"]
    assert model["training_default_path"] == default
    assert f"training, {default}: " in done.stdout
    assert model["training"][default]["default_path"] is True
    positive(model["training"][default]["crops_per_s"])
    for name in ("tile_1024", "tile_512", "tile_1024_tta"):
        positive(model["inference_256x256"][name]["mpx_per_s"])
    positive(result["matmul_gflops"])
    positive(result["ratios"]["training_mpx_default_over_starter"])
    if config.TEST_DIR.is_dir():
        assert result["stage1_test_submission"]["images"] == 1
    for method in ("watershed_border", "components", "watershed_distance"):
        assert result["postprocess_and_rle_1024x1024_300_nuclei"][method]["nuclei"] > 0


def test_scale_check_checks_whole_sources_and_names_an_unknown_one(tmp_path, tiny_model):
    model = str(tiny_model)
    done = run_benchmark(
        tmp_path, "scale_check.py", "--quick", "--model", model, "--groups", FINE_TUNE_GROUP
    )
    assert [float(row["factor"]) for row in markdown_rows(done.stdout)] == [0.5, 2.0]
    saved = json.loads((tmp_path / "reports" / "scale_check-quick.json").read_text())
    assert saved["groups"] == [FINE_TUNE_GROUP] and saved["images"] == 6
    for row in saved["rows"]:  # Every image checked is one of the stained source.
        assert "stained, size within 1.3" in row
        assert not [name for name in row if name.startswith(("fluorescence", "brightfield"))]
    command = [sys.executable, str(BENCHMARKS / "scale_check.py"), "--quick", "--model", model]
    wrong = subprocess.run(
        [*command, "--groups", "stained 1x1"],
        cwd=config.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("error: no such groups ['stained 1x1']")


def test_scale_check_counts_a_size_as_right_within_a_factor_of_1_3():
    sys.path.insert(0, str(BENCHMARKS))
    from scale_check import size_right

    from unet_tf import inference

    labels = disc_labels((96, 96), [((24, 24), 8), ((24, 70), 8), ((70, 48), 8)])
    diameter = inference.median_diameter(labels)
    right = 16.0 / diameter  # the scale that brings these nuclei to 16 pixels
    assert size_right(right, labels, 16.0) is True
    assert size_right(right * 1.29, labels, 16.0) is True
    assert size_right(right / 1.29, labels, 16.0) is True
    assert size_right(right * 1.31, labels, 16.0) is False
    assert size_right(right / 1.31, labels, 16.0) is False
    assert size_right(1.0, np.zeros((8, 8), np.int32), 16.0) is None


def test_quality_check_judges_the_estimate_by_source_and_saves_it(tmp_path, tiny_model):
    from unet_tf import quality

    done = run_benchmark(
        tmp_path, "quality_check.py", "--model", str(tiny_model), "--max-images", "1"
    )
    rows = {row["images of"]: row for row in markdown_rows(done.stdout)}
    assert set(rows) == {"validation split, TTA", "validation split, no TTA"}
    saved = json.loads((tmp_path / "reports" / "quality_check.json").read_text())
    groups = saved["results"]["validation split, TTA"]["images"]
    assert groups >= 5 and float(rows["validation split, TTA"]["images"]) == groups
    assert -1 <= float(rows["validation split, TTA"]["spearman"]) <= 1
    estimate = quality.QualityModel.load(quality.quality_path(tiny_model))
    assert estimate.fitted_on["images"] == groups
