"""``evaluation.tune``: the post-processing chosen on labelled images."""

import numpy as np
import pandas as pd
import pytest
from conftest import disc_labels

from unet_tf import evaluation, training

SHAPE = (64, 64)


def _samples(cracked: bool) -> list:
    """Images of discs (the disc model marks them exactly); ``cracked`` draws a dim line
    across each disc, which the model marks as background and so cuts the disc in two."""
    samples = []
    for index, discs in enumerate([[((20, 20), 10), ((44, 44), 12)], [((20, 44), 11)]]):
        truth = disc_labels(SHAPE, discs)
        image = np.where(truth > 0, 0.8, 0.05).astype(np.float32)
        if cracked:
            for (row, _), _ in discs:
                image[row, :] = np.where(truth[row] > 0, 0.45, image[row])
        samples.append((f"s{index}", np.repeat(image[..., None], 3, -1), truth))
    return samples


def test_tune_scores_the_steps_and_chooses_the_best(disc_model_path):
    net = training.load_model(disc_model_path)
    clean = evaluation.tune(net, _samples(cracked=False), tile_size=64, tta=False)
    assert clean.per_image.dsb_score.mean() == 1.0
    # A model without a border channel: components, tuned threshold, distance watershed.
    assert [step.name for step in clean.steps][:2] == [
        "connected components, threshold 0.5",
        "connected components, tuned threshold",
    ]
    assert len(clean.steps) == 3
    cracked = evaluation.tune(net, _samples(cracked=True), tile_size=64, tta=False)
    best = max(frame.dsb_score.mean() for frame in cracked.results.values())
    assert cracked.per_image.dsb_score.mean() == best < 1.0


def _sweep(scores: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"method": method, "threshold": 0.5, "dsb_score": score}
            for method, score in scores.items()
        ]
    )


def test_centres_get_their_own_ablation_step_and_tta_follows_the_better_watershed():
    methods = ("components", "watershed_distance", "watershed_border", "watershed_center")
    assert tuple(evaluation.default_grids(3)) == methods
    assert "watershed_center" not in evaluation.default_grids(2)
    assert tuple(evaluation.default_grids(1)) == methods[:2]
    for center, chosen in ((0.6, "watershed_center"), (0.4, "watershed_border")):
        table = _sweep(dict(zip(methods, (0.3, 0.4, 0.5, center), strict=True)))
        steps = evaluation.ablation_steps(table, min_area=15, tta=True)
        assert steps[-2].name == "+ watershed on predicted centres"
        assert steps[-1].tta and steps[-1].postprocess["method"] == chosen


def test_semantic_headline_averages_known_dice_and_iou_and_counts_empty_masks_apart():
    # A 4x4 square found half (4x2): Dice 2*8/(16+8) = 2/3, IoU 8/16 = 1/2, the farthest
    # true pixel 2 columns from the prediction. The same square found not at all: Dice and
    # IoU 0, no Hausdorff distance (counted apart, not averaged as infinity).
    truth = np.zeros((8, 8), np.int32)
    truth[2:6, 2:6] = 1
    half = np.zeros((8, 8, 1), np.float32)
    half[2:6, 2:4] = 1.0
    samples = [("half", None, truth), ("missed", None, truth)]
    per_image = evaluation.score_semantic(samples, [half, np.zeros_like(half)])
    headline = evaluation.semantic_headline(per_image)
    assert headline["dice"] == pytest.approx((2 / 3 + 0) / 2)
    assert headline["iou"] == pytest.approx((1 / 2 + 0) / 2)
    assert headline["hausdorff"] == pytest.approx(2.0)
    assert (headline["images"], headline["images_with_one_mask_empty"]) == (2, 1)
