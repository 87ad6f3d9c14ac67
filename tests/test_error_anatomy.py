"""The error anatomy of benchmarks/error_anatomy.py on squares with known answers."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def error_anatomy():
    path = Path(__file__).parents[1] / "benchmarks" / "error_anatomy.py"
    spec = importlib.util.spec_from_file_location("error_anatomy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def squares(*corners, size=10, shape=(40, 60)):
    labels = np.zeros(shape, np.int32)
    for label, (top, left) in corners:
        labels[top : top + size, left : left + size] = label
    return labels


def test_a_perfect_prediction_loses_nothing(error_anatomy):
    truth = squares((1, (5, 5)), (3, (20, 30)))  # label 2 missing: gaps are allowed
    row = error_anatomy.anatomy(truth, truth.copy())
    assert row["true_count"] == row["pred_count"] == 2
    assert row["found_0.5"] == row["found_0.75"] == row["found_0.9"] == 1.0
    assert row["area_ratio"] == 1.0
    assert row["dsb"] == row["dsb_without_lone"] == row["dsb_true_outlines"] == 1.0
    assert row["lone_objects"] == 0


def test_a_shifted_nucleus_is_found_at_low_thresholds_only(error_anatomy):
    truth = squares((1, (5, 5)))
    # Shifted by one pixel: IoU 90 / 110 = 0.82, above the thresholds 0.5 to 0.8 (7 of 10).
    row = error_anatomy.anatomy(truth, np.roll(truth, 1, axis=1))
    assert (row["found_0.5"], row["found_0.75"], row["found_0.9"]) == (1.0, 1.0, 0.0)
    assert row["dsb"] == pytest.approx(0.7)
    assert row["dsb_true_outlines"] == 1.0


def test_a_prediction_on_empty_ground_is_a_lone_object(error_anatomy):
    truth = squares((1, (5, 5)))
    predicted = squares((1, (5, 5)), (2, (25, 40)))
    row = error_anatomy.anatomy(truth, predicted)
    # One true positive and one false positive at every threshold.
    assert row["dsb"] == pytest.approx(0.5)
    assert row["lone_objects"] == 1
    assert row["dsb_without_lone"] == 1.0
    # The lone object stays when outlines are mended: they mend found nuclei only.
    assert row["dsb_true_outlines"] == pytest.approx(0.5)


def test_too_large_and_missed_nuclei(error_anatomy):
    truth = squares((1, (5, 5)), (2, (25, 40)))
    # The first nucleus predicted with a 2-pixel margin (196 against 100 pixels: IoU
    # 0.51), the second missed.
    predicted = np.zeros_like(truth)
    predicted[3:17, 3:17] = 1
    row = error_anatomy.anatomy(truth, predicted)
    assert row["found_0.5"] == 0.5 and row["found_0.75"] == 0.0
    assert row["area_ratio"] == pytest.approx(1.96)
    # The found one with its true outline: one of two found at every threshold.
    assert row["dsb_true_outlines"] == pytest.approx(0.5)


def test_the_summary_groups_by_model_images_and_type(error_anatomy):
    truth = squares((1, (5, 5)))
    rows = [
        {"model": "m", "images": "validation", "imaging_type": kind, **row}
        for kind, row in (
            ("stained", error_anatomy.anatomy(truth, truth)),
            ("stained", error_anatomy.anatomy(truth, np.zeros_like(truth))),
            ("fluorescence", error_anatomy.anatomy(truth, truth)),
        )
    ]
    table = error_anatomy.summary(pd.DataFrame(rows)).set_index("imaging_type")
    assert table.loc["stained", "count"] == 2
    assert table.loc["stained", "dsb"] == pytest.approx(0.5)
    assert table.loc["stained", "true"] == 2 and table.loc["stained", "predicted"] == 1
    assert table.loc["fluorescence", "dsb"] == 1.0


def test_negative_budgets_are_refused(error_anatomy):
    with pytest.raises(SystemExit) as error:
        error_anatomy.main(["--training-images", "-1"])
    assert error.value.code == 2
