"""The Jupyter viewer: sliders redo the post-processing of an output computed once."""

import numpy as np
from conftest import disc_labels

from unet_tf import inference, viewer

SHAPE = (64, 80)


def sample(name, discs, with_truth=True):
    labels = disc_labels(SHAPE, discs)
    image = np.repeat((labels > 0)[..., None], 3, -1).astype(np.float32) * 0.9
    return name, image, labels if with_truth else None


def test_moving_a_slider_changes_the_nuclei_shown_without_running_the_network_again(
    disc_model_path, monkeypatch
):
    samples = [
        sample("small and large", [((15, 15), 4), ((40, 50), 10)]),
        sample("unlabelled", [((30, 30), 8)], with_truth=False),
    ]
    calls = []
    original = inference.predict
    monkeypatch.setattr(
        inference, "predict", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    )
    view = viewer.from_samples(samples, disc_model_path)
    assert view.labels.max() == 2 and view.scores["dsb_score"] == 1.0
    assert "2</b> nuclei found" in view.summary.value and "DSB score 1.000" in view.summary.value
    png = view.picture.value
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    # A minimum area above the small disc's 49 pixels drops it.
    view.sliders["min_area"].value = 60
    assert view.labels.max() == 1 and view.scores["dsb_score"] == 0.5
    assert view.picture.value != png
    assert view.table.value.count("<tr") == 2  # The header and one nucleus.
    view.sliders["threshold"].value = 0.95
    assert len(calls) == 1, "the network ran again for a slider"

    view.picker.value = "unlabelled"
    assert view.labels.max() == 1 and view.scores is None
    assert "true nuclei" not in view.summary.value
    view.picker.value = "small and large"
    assert len(calls) == 2


def constant_estimate(expected: float, threshold: float, confidence_logit: float = 2.0):
    """A quality estimate that says ``expected`` of every image, whatever it sees."""
    from unet_tf import quality

    def constant(names, bias):
        count = len(names)
        return quality.Linear(names, (0.0,) * count, (1.0,) * count, (0.0,) * count, bias)

    plain = [name for name in quality.IMAGE_FEATURES if name not in quality.WITH_TTA]
    nucleus = [name for name in quality.NUCLEUS_FEATURES if name not in quality.WITH_TTA]
    return quality.QualityModel(
        constant(quality.NUCLEUS_FEATURES, confidence_logit),
        constant(nucleus, confidence_logit),
        constant(quality.IMAGE_FEATURES, expected),
        constant(plain, expected),
        threshold,
    )


def test_the_viewer_shows_the_expected_score_and_each_nucleus_confidence(disc_model_path):
    from unet_tf import trained

    net, settings, _ = trained.load_model_and_settings(disc_model_path)
    samples = [sample("two discs", [((15, 15), 6), ((40, 50), 10)])]
    view = viewer.Viewer(net, samples, settings, constant_estimate(0.8, threshold=0.5))
    assert "expected DSB 0.800 (looks reliable)" in view.summary.value
    assert view.table.value.count("0.88") == 2  # sigmoid(2): each nucleus' confidence.
    doubtful = viewer.Viewer(net, samples, settings, constant_estimate(0.4, threshold=0.5))
    assert "expected DSB 0.400 (<b>unreliable</b>: check by eye)" in doubtful.summary.value
    assert "expected DSB" not in viewer.Viewer(net, samples, settings).summary.value
