"""Metrics on synthetic discs with known answers, and the Keras metrics against numpy."""

import numpy as np
import pytest
from conftest import disc, disc_labels

from unet_tf import metrics

SHAPE = (64, 64)


def test_identical_masks_score_one_and_disjoint_zero():
    a = disc(SHAPE, (20, 20), 8)
    b = disc(SHAPE, (45, 45), 8)
    assert metrics.pixel_iou(a, a) == 1.0
    assert metrics.dice(a, a) == 1.0
    assert metrics.pixel_iou(a, b) == 0.0
    assert metrics.dice(a, b) == 0.0


def test_empty_masks_agree_perfectly():
    empty = np.zeros(SHAPE, bool)
    assert metrics.pixel_iou(empty, empty) == 1.0
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dsb_score(empty.astype(int), empty.astype(int)) == 1.0


@pytest.mark.parametrize("shift", [1, 2, 5])
def test_a_known_shift_gives_the_known_iou(shift):
    # A 10x10 square shifted by s columns overlaps in 10*(10-s) of 10*(10+s) pixels.
    a = np.zeros(SHAPE, bool)
    a[10:20, 10:20] = True
    b = np.roll(a, shift, axis=1)
    expected_iou = (10 - shift) / (10 + shift)
    assert metrics.pixel_iou(a, b) == pytest.approx(expected_iou)
    assert metrics.dice(a, b) == pytest.approx(2 * expected_iou / (1 + expected_iou))


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.pixel_iou(np.zeros((2, 2)), np.zeros((2, 3)))


def test_iou_matrix_matches_brute_force():
    rng = np.random.default_rng(1)
    true = disc_labels(SHAPE, [((x, y), r) for x, y, r in rng.integers(8, 56, (6, 3)) % 20 + 8])
    pred = np.roll(true, 2, axis=0) * 3  # Non-consecutive label values.
    matrix = metrics.iou_matrix(true, pred)
    true_ids = [v for v in np.unique(true) if v]
    pred_ids = [v for v in np.unique(pred) if v]
    assert matrix.shape == (len(true_ids), len(pred_ids))
    for i, t in enumerate(true_ids):
        for j, p in enumerate(pred_ids):
            assert matrix[i, j] == pytest.approx(metrics.pixel_iou(true == t, pred == p))


def test_dsb_score_of_perfect_and_empty_predictions():
    true = disc_labels(SHAPE, [((20, 20), 8), ((45, 45), 8)])
    assert metrics.dsb_score(true, true) == 1.0
    assert metrics.dsb_score(true, np.zeros_like(true)) == 0.0
    # Label values do not matter, only the objects.
    assert metrics.dsb_score(true, true * 7) == 1.0


def test_merged_nuclei_score_as_one_false_positive_and_two_false_negatives():
    # Two equal discs side by side: each has IoU 0.5 with their union, which is no hit.
    true = disc_labels(SHAPE, [((32, 21), 9), ((32, 41), 9)])
    assert (true == 1).sum() == (true == 2).sum()
    merged = (true > 0).astype(int)
    assert metrics.match_counts(true, merged, 0.5) == (0, 1, 2)
    assert metrics.dsb_score(true, merged) == 0.0


def test_split_nucleus_scores_as_expected():
    true = np.zeros(SHAPE, int)
    true[10:30, 10:30] = 1
    split = np.zeros(SHAPE, int)
    split[10:30, 10:22] = 1  # 240 of 400 pixels: IoU 0.6 with the true nucleus.
    split[10:30, 22:30] = 2  # 160 of 400 pixels: IoU 0.4, never a hit.
    # Hit at thresholds 0.50 and 0.55 (TP 1, FP 1, FN 0 -> 1/2), miss from 0.60 on (0/3).
    assert metrics.match_counts(true, split, 0.55) == (1, 1, 0)
    assert metrics.match_counts(true, split, 0.60) == (0, 2, 1)
    assert metrics.dsb_score(true, split) == pytest.approx((0.5 + 0.5) / 10)


def test_iou_exactly_at_the_threshold_is_not_a_hit():
    true = np.zeros((1, 4), int)
    true[0, :2] = 1
    pred = np.zeros((1, 4), int)
    pred[0, 1] = 1  # IoU 0.5 exactly.
    assert metrics.match_counts(true, pred, 0.5) == (0, 1, 1)


def test_dsb_score_over_thresholds_for_a_shifted_disc():
    true = np.zeros(SHAPE, int)
    true[10:30, 10:30] = 1
    pred = np.roll(true, 3, axis=1)  # IoU 17/23 = 0.739: hits at 0.50..0.70, 5 of 10.
    assert metrics.dsb_score(true, pred) == pytest.approx(0.5)


def test_mean_dsb_score_and_empty_input():
    true = disc_labels(SHAPE, [((20, 20), 8)])
    assert metrics.mean_dsb_score([(true, true), (true, np.zeros_like(true))]) == 0.5
    with pytest.raises(ValueError, match="at least one image"):
        metrics.mean_dsb_score([])


def test_thresholds_below_one_half_are_refused():
    true = disc_labels(SHAPE, [((20, 20), 8)])
    with pytest.raises(ValueError, match="ambiguous"):
        metrics.match_counts(true, true, 0.3)


def test_precision_recall_f1():
    true = disc_labels(SHAPE, [((15, 15), 6), ((45, 45), 6), ((15, 45), 6)])
    pred = disc_labels(SHAPE, [((15, 15), 6), ((45, 45), 6), ((50, 10), 4), ((58, 58), 3)])
    result = metrics.precision_recall_f1(true, pred)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 2, 1)
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(4 / 7)


def test_hausdorff_distance_of_known_shapes():
    a = disc(SHAPE, (30, 30), 5)
    assert metrics.hausdorff_distance(a, a) == 0.0
    assert metrics.hausdorff_distance(a, np.roll(a, 4, axis=0)) == pytest.approx(4.0)
    b = a.copy()
    b[60, 60] = True  # One stray pixel far away dominates Hausdorff.
    rows, cols = np.nonzero(a)
    nearest = np.hypot(rows - 60, cols - 60).min()
    assert metrics.hausdorff_distance(a, b) == pytest.approx(nearest)
    assert metrics.hausdorff_distance(a, np.zeros(SHAPE, bool)) == np.inf


class TestKerasMetrics:
    """The streaming Keras metrics must equal the numpy metrics of all pixels seen."""

    @pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
    def test_streaming_iou_and_dice_match_numpy_over_batches(self, threshold):
        from unet_tf.keras_metrics import PixelDice, PixelIoU

        rng = np.random.default_rng(0)
        y_true = (rng.random((6, 16, 16, 1)) > 0.6).astype(np.float32)
        y_pred = np.clip(y_true * 0.6 + rng.random(y_true.shape) * 0.5, 0, 1).astype(np.float32)
        iou, dice = PixelIoU(threshold=threshold), PixelDice(threshold=threshold)
        for start in range(0, 6, 2):  # Three batches of two.
            iou.update_state(y_true[start : start + 2], y_pred[start : start + 2])
            dice.update_state(y_true[start : start + 2], y_pred[start : start + 2])
        truth, predicted = y_true > 0.5, y_pred > threshold
        assert float(iou.result()) == pytest.approx(metrics.pixel_iou(truth, predicted), rel=1e-6)
        assert float(dice.result()) == pytest.approx(metrics.dice(truth, predicted), rel=1e-6)
        # The mean of per-batch scores differs from the pooled score: this is not it.
        iou.reset_state()
        assert float(iou.result()) == 1.0

    def test_channel_selection(self):
        from unet_tf.keras_metrics import PixelIoU

        y_true = np.zeros((1, 4, 4, 2), np.float32)
        y_true[..., 0] = 1.0
        y_pred = np.zeros_like(y_true)
        y_pred[..., 0] = 0.9
        metric = PixelIoU(channel=0)
        metric.update_state(y_true, y_pred)
        assert float(metric.result()) == 1.0
        pooled = PixelIoU()
        pooled.update_state(y_true, y_pred)
        assert float(pooled.result()) == 1.0  # Channel 1 is empty in both.
        wrong = PixelIoU(channel=1)
        wrong.update_state(y_true, 1.0 - y_pred)
        assert float(wrong.result()) == 0.0
