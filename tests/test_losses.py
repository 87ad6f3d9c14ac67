"""Losses: known values, per-sample shape, multi-channel use and lookup by name."""

import numpy as np
import pytest

from unet_tf import losses


def as_numpy(value):
    return np.asarray(value, dtype=np.float64)


@pytest.fixture
def masks():
    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 8, 8, 2)) > 0.5).astype(np.float32)
    y_pred = np.clip(rng.random((3, 8, 8, 2)), 0.01, 0.99).astype(np.float32)
    return y_true, y_pred


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_every_loss_gives_one_value_per_sample_on_multichannel_input(masks, name):
    y_true, y_pred = masks
    value = as_numpy(losses.get_loss(name)(y_true, y_pred))
    assert value.shape == (3,)
    assert np.all(np.isfinite(value)) and np.all(value >= 0)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_perfect_predictions_beat_poor_ones(masks, name):
    y_true, y_pred = masks
    loss = losses.get_loss(name)
    near_perfect = np.clip(y_true, 0.001, 0.999)
    assert np.all(as_numpy(loss(y_true, near_perfect)) < as_numpy(loss(y_true, y_pred)))


def test_binary_crossentropy_matches_numpy(masks):
    y_true, y_pred = masks
    expected = -(y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        as_numpy(losses.binary_crossentropy(y_true, y_pred)), expected, rtol=1e-5
    )


def test_dice_loss_matches_numpy_per_channel(masks):
    y_true, y_pred = masks
    intersection = (y_true * y_pred).sum(axis=(1, 2))
    total = y_true.sum(axis=(1, 2)) + y_pred.sum(axis=(1, 2))
    expected = (1 - (2 * intersection + 1) / (total + 1)).mean(axis=-1)
    np.testing.assert_allclose(as_numpy(losses.dice_loss(y_true, y_pred)), expected, rtol=1e-5)
    np.testing.assert_allclose(as_numpy(losses.dice_loss(y_true, y_true)), 0.0, atol=1e-6)


def test_focal_loss_reduces_to_weighted_bce_with_gamma_zero(masks):
    y_true, y_pred = masks
    focal = as_numpy(losses.focal_loss(y_true, y_pred, gamma=0.0, alpha=0.5))
    bce = as_numpy(losses.binary_crossentropy(y_true, y_pred))
    np.testing.assert_allclose(focal, 0.5 * bce, rtol=1e-5)


def test_unknown_loss_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown loss 'dcie'.*bce_dice"):
        losses.get_loss("dcie")


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_unit_pixel_weights_change_nothing(masks, name):
    y_true, y_pred = masks
    weights = np.ones((*y_true.shape[:-1], 1), np.float32)
    weighted = losses.get_loss(name, pixel_weights=True)
    np.testing.assert_allclose(
        as_numpy(weighted(np.concatenate([y_true, weights], -1), y_pred)),
        as_numpy(losses.get_loss(name)(y_true, y_pred)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", ["bce", "bce_dice", "focal"])
def test_pixel_weights_stress_the_weighted_pixels(masks, name):
    y_true, _ = masks
    weights = np.ones((*y_true.shape[:-1], 1), np.float32)
    weights[:, :4] = 5.0
    # The same error is made once in the weighted rows and once in the others.
    error_in_weighted, error_elsewhere = y_true.copy(), y_true.copy()
    error_in_weighted[:, 1] = 1 - error_in_weighted[:, 1]
    error_elsewhere[:, 6] = 1 - error_elsewhere[:, 6]
    loss = losses.get_loss(name, pixel_weights=True)
    target = np.concatenate([y_true, weights], -1)

    def value(prediction):
        return as_numpy(loss(target, np.clip(prediction, 0.05, 0.95)))

    assert np.all(value(error_in_weighted) > value(error_elsewhere))
