"""Full-resolution inference: tiling equals a single pass where it must, TTA undoes itself."""

import itertools

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


def test_an_image_that_fits_one_tile_is_one_pass_of_the_model(net):
    aligned = np.random.default_rng(0).random((40, 56, 3)).astype(np.float32)
    direct = net.predict_on_batch(aligned[None])[0]
    np.testing.assert_allclose(
        inference.predict_full(net, aligned, tile_size=64), direct, atol=1e-5
    )
    # Other sizes are padded by reflection to a multiple of 2**depth and cropped back.
    image = aligned[:37, :53]
    padded = np.pad(image, [(0, 3), (0, 3), (0, 0)], mode="reflect")
    prediction = inference.predict_full(net, image, tile_size=64)
    assert prediction.shape == (37, 53, 1)
    np.testing.assert_allclose(
        prediction, net.predict_on_batch(padded[None])[0, :37, :53], atol=1e-5
    )
    with pytest.raises(ValueError, match="height, width, channels"):
        inference.predict_full(net, image[..., 0])


def test_a_one_pixel_wide_image_is_padded_by_repeating_its_edge(net):
    image = np.random.default_rng(4).random((20, 1, 3)).astype(np.float32)
    # Reflection has nothing to mirror in one column: the column is repeated to 4 instead.
    expected = net.predict_on_batch(np.repeat(image, 4, axis=1)[None])[0, :, :1]
    np.testing.assert_allclose(
        inference.predict_full(net, image, tile_size=64), expected, atol=1e-5
    )


def test_large_images_are_tiled_and_blended_without_seams(net):
    image = np.random.default_rng(1).random((150, 170, 3)).astype(np.float32)
    tiled = inference.predict_full(net, image, tile_size=96, overlap=32, batch_size=3)
    assert tiled.shape == (150, 170, 1)
    assert np.all(np.isfinite(tiled))
    # Rows take two tiles of 92 starting at 0 and 58, columns three of 80 starting at 0, 45
    # and 90. The first tile is alone on rows below 58 and columns below 45, and rows below
    # 50 and columns below 40 lie farther from its inner edges than the depth-2 receptive
    # field reaches, so there the blend must equal one whole-image pass: one tile of 152x172.
    whole = inference.predict_full(net, image, tile_size=256)
    assert inference.axis_tiles(150, 96, 32, 4) == (92, [0, 58])
    assert inference.axis_tiles(170, 96, 32, 4) == (80, [0, 45, 90])
    np.testing.assert_allclose(tiled[:50, :40], whole[:50, :40], atol=1e-5)
    # As far from the inner edges of the last tile (rows 58 to 150, columns 90 to 170), the
    # blend is that tile's own prediction: a tile put one pixel off, or blended with the
    # wrong weights, breaks it.
    last = net.predict_on_batch(image[None, 58:150, 90:170])[0]
    np.testing.assert_allclose(tiled[100:, 130:], last[42:, 40:], atol=1e-5)


def test_tta_of_a_symmetric_model_input_matches_and_keeps_shape(net):
    image = np.random.default_rng(2).random((48, 32, 3)).astype(np.float32)
    averaged = inference.predict_full(net, image, tile_size=64, overlap=8, tta=True)
    assert averaged.shape == (48, 32, 1)
    manual = np.mean(
        [
            inference.inverse_dihedral(
                inference.predict_full(net, inference.dihedral(image, t), tile_size=64), t
            )
            for t in range(8)
        ],
        axis=0,
    )
    np.testing.assert_allclose(averaged, manual, atol=1e-5)
    tiled_tta = inference.predict_full(
        net, np.tile(image, (3, 3, 1)), tile_size=64, overlap=8, tta=True
    )
    assert tiled_tta.shape == (144, 96, 1)


@pytest.mark.parametrize(
    ("size", "tile_size", "overlap", "expected"),
    [
        (1024, 1024, 128, (1024, [0])),
        (696, 1024, 128, (704, [0])),
        (2048, 1024, 128, (768, [0, 640, 1280])),
        (1040, 1024, 128, (592, [0, 448])),
    ],
)
def test_axis_tiles_are_as_few_and_as_small_as_cover_the_axis(size, tile_size, overlap, expected):
    tile, starts = inference.axis_tiles(size, tile_size, overlap, 16)
    assert (tile, starts) == expected
    assert tile % 16 == 0 and tile <= max(tile_size, -(-size // 16) * 16)
    # The tiles cover the axis, and neighbours share at least the overlap.
    assert starts[0] == 0 and starts[-1] + tile >= size
    assert all(later - earlier <= tile - overlap for earlier, later in itertools.pairwise(starts))


def test_rectangular_tiles_with_tta_keep_the_shape(net):
    image = np.random.default_rng(3).random((100, 60, 3)).astype(np.float32)
    averaged = inference.predict_full(net, image, tile_size=64, overlap=8, tta=True)
    plain = inference.predict_full(net, image, tile_size=64, overlap=8)
    assert averaged.shape == plain.shape == (100, 60, 1)
    # Two tiles of rows (0 to 56 and 44 to 100), one of columns. Away from where they meet
    # (the depth-2 receptive field reaches about 12 pixels in), the tiled average of the 8
    # views is the whole image's average, which the test above checks against a manual
    # one; where they meet it differs by the blending of two contexts only (0.017 seen).
    whole = inference.predict_full(net, image, tile_size=128, tta=True)
    np.testing.assert_allclose(averaged[:30], whole[:30], atol=1e-5)
    np.testing.assert_allclose(averaged[70:], whole[70:], atol=1e-5)
    assert np.abs(averaged - whole).max() < 0.03
    # And TTA changes the output (0.045 on average here): it is not the plain pass.
    assert np.abs(averaged - plain).mean() > 0.02


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


def test_sharp_enlargement_keeps_the_range_and_steepens_edges():
    # A bright square on black, enlarged 4x: Lanczos overshoots at the edges, and the
    # overshoot is clipped to the image's own range.
    image = np.zeros((16, 16, 1), np.float32)
    image[5:11, 5:11] = 0.8
    sharp = inference.resize(image, (64, 64), sharp=True)
    smooth = inference.resize(image, (64, 64))
    assert sharp.shape == smooth.shape == (64, 64, 1)
    assert sharp.min() == 0.0 and sharp.max() == np.float32(0.8)
    # The edge rises more steeply than bilinear makes it.
    assert np.abs(np.diff(sharp[32, :, 0])).max() > 1.1 * np.abs(np.diff(smooth[32, :, 0])).max()
    # Shrinking is the same antialiased bilinear resampling either way.
    np.testing.assert_array_equal(
        inference.resize(sharp, (20, 20), sharp=True), inference.resize(sharp, (20, 20))
    )


def test_the_spread_of_the_tta_views_is_their_standard_deviation(net):
    image = np.random.default_rng(5).random((32, 48, 3)).astype(np.float32)
    mean, spread = inference.predict_full(net, image, tile_size=64, tta=True, spread=True)
    # One tile: the plain mean and standard deviation of the 8 views, each turned back.
    prepared = inference.appearance.to_model_input(image, model.model_channels(net))
    views = np.stack(
        [
            inference.inverse_dihedral(
                net.predict_on_batch(inference.dihedral(prepared, t)[None])[0], t
            )
            for t in inference.DIHEDRAL
        ]
    )
    np.testing.assert_allclose(mean, views.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(spread, views.std(axis=0), atol=1e-3)
    assert spread.max() > 1e-3  # An untrained net is not symmetric: its views differ.
    plain, none = inference.predict_full(net, image, tile_size=64, spread=True)
    np.testing.assert_allclose(none, 0.0, atol=1e-3)
    np.testing.assert_allclose(plain, inference.predict_full(net, image, tile_size=64))
