"""Kaggle run-length encoding: a hand-worked example, round trips and validation."""

import numpy as np
import pytest
from conftest import disc_labels

from unet_tf import rle


def test_hand_worked_example():
    # Column-major numbering of a 3x4 image:   1 4 7 10
    #                                           2 5 8 11
    #                                           3 6 9 12
    mask = np.array(
        [
            [0, 1, 0, 0],
            [1, 1, 0, 1],
            [1, 0, 0, 1],
        ]
    )
    assert rle.rle_encode(mask) == "2 4 11 2"
    np.testing.assert_array_equal(rle.rle_decode("2 4 11 2", (3, 4)), mask.astype(bool))


def test_first_and_last_pixels():
    mask = np.zeros((2, 3), bool)
    mask[0, 0] = mask[1, 2] = True
    assert rle.rle_encode(mask) == "1 1 6 1"
    assert rle.rle_encode(np.ones((2, 3))) == "1 6"
    assert rle.rle_encode(np.zeros((2, 3))) == ""


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 80)])
def test_random_masks_round_trip(seed, shape):
    mask = np.random.default_rng(seed).random(shape) > 0.5
    encoded = rle.rle_encode(mask)
    np.testing.assert_array_equal(rle.rle_decode(encoded, shape), mask)


def test_labels_to_rles_matches_per_object_encoding():
    labels = disc_labels((60, 70), [((15, 15), 7), ((30, 40), 12), ((50, 10), 5)])
    labels[labels == 2] = 9  # Label values need not be consecutive.
    expected = [rle.rle_encode(labels == value) for value in (1, 3, 9)]
    assert rle.labels_to_rles(labels) == expected
    assert rle.labels_to_rles(np.zeros((4, 4), int)) == []


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("1 2 3", "odd number"),
        ("1 x", "not an integer"),
        ("0 2", "at least 1"),
        ("3 0", "lengths must be at least 1"),
        ("5 2 1 2", "not sorted or overlap"),
        ("1 4 3 2", "not sorted or overlap"),
        ("10 4", "past the last pixel"),
    ],
)
def test_invalid_encodings_are_refused(encoded, message):
    with pytest.raises(ValueError, match=message):
        rle.rle_decode(encoded, (3, 4))


def test_adjacent_runs_are_valid():
    np.testing.assert_array_equal(rle.rle_decode("1 2 3 2", (2, 2)), np.ones((2, 2), bool))
