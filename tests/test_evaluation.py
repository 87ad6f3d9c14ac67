"""``evaluation.tune``: the post-processing chosen on labelled images."""

import numpy as np
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
