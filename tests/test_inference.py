"""Full-resolution inference: tiling equals a single pass where it must, TTA undoes itself."""

import keras
import numpy as np
import pytest

from unet_tf import inference, model


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(0)
    return model.get_model(depth=2, base_filters=4)


@pytest.mark.parametrize("transform", inference.DIHEDRAL)
def test_dihedral_transforms_invert(transform):
    array = np.arange(24, dtype=np.float32).reshape(3, 4, 2)
    restored = inference.inverse_dihedral(inference.dihedral(array, transform), transform)
    np.testing.assert_array_equal(restored, array)


def test_the_eight_transforms_are_distinct():
    array = np.arange(12).reshape(3, 4)
    seen = {
        inference.dihedral(array, t).tobytes() + bytes(inference.dihedral(array, t).shape)
        for t in range(8)
    }
    assert len(seen) == 8


def test_tiled_equals_untiled_on_an_image_that_fits_one_tile(net):
    image = np.random.default_rng(0).random((40, 56, 3)).astype(np.float32)
    whole = model.predict_image(net, image)
    tiled = inference.predict_full(net, image, tile_size=64, overlap=8)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_large_images_are_tiled_and_blended_without_seams(net):
    image = np.random.default_rng(1).random((150, 170, 3)).astype(np.float32)
    tiled = inference.predict_full(net, image, tile_size=96, overlap=32, batch_size=3)
    assert tiled.shape == (150, 170, 1)
    assert np.all(np.isfinite(tiled))
    # Tiles start at rows 0, 54 and columns 0, 64, 74: the first tile is alone on rows and
    # columns below 54, and up to 50 lies farther from its inner edges than the depth-2
    # receptive field reaches, so there the blend must equal one whole-image pass.
    whole = model.predict_image(net, image)
    assert inference.tile_starts(150, 96, 32) == [0, 54]
    np.testing.assert_allclose(tiled[:50, :50], whole[:50, :50], atol=1e-5)
    assert np.abs(tiled - whole).mean() < 0.05


def test_tta_of_a_symmetric_model_input_matches_and_keeps_shape(net):
    image = np.random.default_rng(2).random((48, 32, 3)).astype(np.float32)
    averaged = inference.predict_full(net, image, tile_size=64, overlap=8, tta=True)
    assert averaged.shape == (48, 32, 1)
    manual = np.mean(
        [
            inference.inverse_dihedral(model.predict_image(net, inference.dihedral(image, t)), t)
            for t in range(8)
        ],
        axis=0,
    )
    np.testing.assert_allclose(averaged, manual, atol=1e-5)
    tiled_tta = inference.predict_full(
        net, np.tile(image, (3, 3, 1)), tile_size=64, overlap=8, tta=True
    )
    assert tiled_tta.shape == (144, 96, 1)


def test_blend_window_is_symmetric_and_positive():
    window = inference.blend_window(32, 8)
    assert window.min() > 0 and window.max() == 1
    np.testing.assert_allclose(window, window[::-1, ::-1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"tile_size": 30}, "multiple"), ({"tile_size": 64, "overlap": 40}, "overlap")],
)
def test_bad_tiling_arguments(net, kwargs, message):
    with pytest.raises(ValueError, match=message):
        inference.predict_full(net, np.zeros((8, 8, 3), np.float32), **kwargs)
