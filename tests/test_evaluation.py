"""``evaluation.tune``: the post-processing chosen on labelled images, smoothing included."""

import numpy as np
from conftest import disc_labels

from unet_tf import evaluation, training

SHAPE = (64, 64)


def _samples(cracked: bool) -> list:
    """Images of two bright discs each (the disc model marks them exactly); ``cracked``
    draws a dim line across each disc, which the model marks as background."""
    samples = []
    for index, discs in enumerate([[((20, 20), 10), ((44, 44), 12)], [((20, 44), 11)]]):
        truth = disc_labels(SHAPE, discs)
        image = np.where(truth > 0, 0.8, 0.05).astype(np.float32)
        if cracked:
            for (row, _), _ in discs:
                image[row, :] = np.where(truth[row] > 0, 0.45, image[row])
        samples.append((f"s{index}", np.repeat(image[..., None], 3, -1), truth))
    return samples


def test_tune_smooths_where_it_joins_cracked_nuclei(disc_model_path):
    net = training.load_model(disc_model_path)
    tuning = evaluation.tune(net, _samples(cracked=True), tile_size=64, tta=False)
    smoothing = [step for step in tuning.steps if step.name.startswith("+ smoothing")]
    assert len(smoothing) == 1
    assert tuning.chosen == smoothing[0]
    assert tuning.chosen.postprocess["smoothing"] in evaluation.SMOOTHING
    assert (
        tuning.per_image.dsb_score.mean() > tuning.results[tuning.steps[-2].name].dsb_score.mean()
    )


def test_tune_leaves_clean_outputs_unsmoothed(disc_model_path):
    net = training.load_model(disc_model_path)
    tuning = evaluation.tune(net, _samples(cracked=False), tile_size=64, tta=False)
    assert "smoothing" not in tuning.chosen.postprocess
    assert tuning.per_image.dsb_score.mean() == 1.0
