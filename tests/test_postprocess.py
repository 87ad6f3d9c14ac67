"""Post-processing on synthetic discs: touching nuclei split, small objects and holes."""

import numpy as np
import pytest
from conftest import disc, disc_labels
from scipy import ndimage

from unet_tf import metrics, postprocess

SHAPE = (64, 96)
# Two discs of radius 12 whose centres are 20 px apart: they overlap in a narrow waist.
TOUCHING = [((32, 30), 12), ((32, 50), 12)]


def soft(mask: np.ndarray, high=0.95, low=0.05) -> np.ndarray:
    return np.where(mask, high, low).astype(np.float32)


def test_connected_components_merges_touching_discs():
    true = disc_labels(SHAPE, TOUCHING)
    labels = postprocess.connected_components(soft(true > 0))
    assert labels.max() == 1
    # The merged blob matches at most the larger disc, and only at the lowest thresholds.
    assert metrics.dsb_score(true, labels) < 0.1


def test_watershed_on_distance_splits_touching_discs():
    true = disc_labels(SHAPE, TOUCHING)
    labels = postprocess.watershed_instances(soft(true > 0), min_distance=2)
    assert labels.max() == 2
    assert metrics.dsb_score(true, labels) > 0.8


def test_watershed_with_border_channel_splits_touching_discs():
    true = disc_labels(SHAPE, TOUCHING)
    # Borders: object pixels with a different label among their 8 neighbours.
    padded = np.pad(true, 1)
    neighbours = [padded[1 + dy : 1 + dy + SHAPE[0], 1 + dx : 1 + dx + SHAPE[1]]
                  for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # fmt: skip
    border = (true > 0) & np.any([n != true for n in neighbours], axis=0)
    labels = postprocess.watershed_instances(soft(true > 0), borders=soft(border, 0.9, 0.02))
    assert labels.max() == 2
    assert metrics.dsb_score(true, labels) > 0.8


def centre_map(labels: np.ndarray) -> np.ndarray:
    """The normalised distance to each nucleus's edge, as the ``center`` target has it."""
    import tensorflow as tf

    from unet_tf import pipeline

    return pipeline.center_distance(tf.constant(labels)).numpy()


def test_watershed_on_centres_splits_touching_discs():
    true = disc_labels(SHAPE, TOUCHING)
    labels = postprocess.center_watershed(soft(true > 0), centre_map(true) * 0.9)
    assert labels.max() == 2
    assert metrics.dsb_score(true, labels) > 0.8
    stacked = np.stack([soft(true > 0), np.zeros(SHAPE), centre_map(true)], -1)
    np.testing.assert_array_equal(
        postprocess.to_instances(stacked, "watershed_center", marker_threshold=0.5), labels
    )


def test_watershed_on_centres_keeps_a_small_nucleus_beside_a_large_one():
    # A nucleus of radius 4 touching one of radius 14: its centre is a few pixels only.
    true = disc_labels(SHAPE, [((32, 30), 14), ((32, 47), 4)])
    labels = postprocess.center_watershed(soft(true > 0), centre_map(true), min_area=10)
    assert labels.max() == 2
    assert metrics.dsb_score(true, labels) > 0.7


def test_watershed_on_centres_needs_a_centre_channel():
    with pytest.raises(ValueError, match="target='center'"):
        postprocess.to_instances(np.zeros((8, 8, 2), np.float32), "watershed_center")
    assert postprocess.center_watershed(*np.zeros((2, 8, 8), np.float32)).max() == 0


def test_separate_discs_stay_whole_and_small_ones_are_dropped():
    true = disc_labels(SHAPE, [((20, 20), 8), ((40, 70), 10), ((55, 10), 1)])
    for labels in (
        postprocess.connected_components(soft(true > 0), min_area=10),
        postprocess.watershed_instances(soft(true > 0), min_area=10),
    ):
        assert labels.max() == 2
        assert metrics.dsb_score(np.where(true == 3, 0, true), labels) == 1.0


def test_holes_are_filled_with_the_surrounding_label():
    ring = disc(SHAPE, (32, 48), 12) & ~disc(SHAPE, (32, 48), 4)
    labels = postprocess.connected_components(soft(ring))
    assert labels.max() == 1
    assert (labels == 1).sum() == disc(SHAPE, (32, 48), 12).sum()


def test_empty_prediction_gives_no_objects():
    empty = np.zeros(SHAPE, np.float32)
    assert postprocess.connected_components(empty).max() == 0
    assert postprocess.watershed_instances(empty).max() == 0


def test_relabel_sequential_and_shape_checks():
    labels = np.array([[0, 7, 7, 3], [0, 0, 9, 9]])
    np.testing.assert_array_equal(
        postprocess.relabel_sequential(labels), [[0, 1, 1, 2], [0, 0, 3, 3]]
    )
    with pytest.raises(ValueError, match="probability map"):
        postprocess.connected_components(np.zeros((2, 2, 2, 2)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distance_peaks_blob_by_blob_equal_the_whole_image_h_maxima(seed):
    from skimage.morphology import reconstruction

    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[:128, :128]
    mask = np.zeros((128, 128), bool)
    for _ in range(25):
        row, col = rng.uniform(0, 128, 2)
        mask |= (rows - row) ** 2 + (cols - col) ** 2 <= rng.uniform(3, 10) ** 2
    distance = ndimage.distance_transform_edt(mask)
    blobs, _ = ndimage.label(mask, structure=np.ones((3, 3)))
    markers = postprocess._distance_peaks(distance, 2.0, blobs)
    whole = distance - reconstruction(np.maximum(distance - 2.0, 0), distance, method="dilation")
    np.testing.assert_array_equal(markers > 0, whole > 1e-6)
    assert markers.max() >= 2


@pytest.mark.parametrize(
    ("count", "names", "separation"),
    [
        (1, ["nucleus"], None),
        (2, ["nucleus", "border"], "watershed_border"),
        (3, ["nucleus", "border", "center"], "watershed_center"),
        (4, ["nucleus", "border", "center", "channel3"], "watershed_center"),
    ],
)
def test_channel_table_names_channels_and_the_methods_that_read_them(count, names, separation):
    assert postprocess.channel_names(count) == names
    assert postprocess.separation_method(count) == separation
    methods = postprocess.methods_for(count)
    assert {postprocess.METHOD_CHANNELS[method] for method in methods} <= set(names)
    probabilities = np.zeros((*SHAPE, count), np.float32)
    probabilities[..., 0] = soft(disc_labels(SHAPE, TOUCHING) > 0)
    for method in postprocess.METHODS:
        if method in methods:
            assert postprocess.to_instances(probabilities, method).max() >= 1
        else:
            with pytest.raises(ValueError, match=f"target='{postprocess.METHOD_CHANNELS[method]}'"):
                postprocess.to_instances(probabilities, method)


def test_channel_table_rejects_an_output_without_channels_and_unknown_methods():
    with pytest.raises(ValueError, match="at least one channel"):
        postprocess.channel_names(0)
    with pytest.raises(ValueError, match="unknown post-processing method 'votes'"):
        postprocess.to_instances(np.zeros(SHAPE, np.float32), "votes")
