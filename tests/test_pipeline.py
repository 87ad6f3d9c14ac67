"""The tf.data pipelines: shapes, dtypes, determinism, padding and label-consistent augmentation."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import disc_labels

from unet_tf import pipeline


def synthetic(shapes, seed=0):
    """Images whose first channel encodes the labels, so augmentation consistency is checkable."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for height, width in shapes:
        discs = [
            ((rng.integers(height), rng.integers(width)), int(rng.integers(3, 8))) for _ in range(6)
        ]
        label = disc_labels((height, width), discs)
        image = np.stack(
            [label / 10.0, rng.random((height, width)), np.full((height, width), 0.5)], -1
        )
        images.append(image.astype(np.float32))
        labels.append(label)
    return pipeline.pack_samples(images, labels), images, labels


def batches(dataset, count):
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(count)]


def test_training_batches_have_the_promised_shapes_and_dtypes():
    packed, _, _ = synthetic([(40, 50), (64, 64), (30, 70)])
    dataset = pipeline.make_training_dataset(packed, crop_size=32, batch_size=4, seed=1)
    images, targets = next(iter(dataset))
    assert images.shape == (4, 32, 32, 3) and images.dtype == tf.float32
    assert targets.shape == (4, 32, 32, 1) and targets.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
    assert set(np.unique(targets.numpy())) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "augmentation",
    [
        pipeline.NO_AUGMENTATION,
        pipeline.Augmentation(),
        pipeline.Augmentation(affine=True, elastic=True),
    ],
    ids=["none", "default", "affine+elastic"],
)
def test_same_seed_same_batches_other_seed_other_batches(augmentation):
    packed, _, _ = synthetic([(40, 50), (64, 64), (30, 70)])

    def run(seed):
        return batches(
            pipeline.make_training_dataset(
                packed, crop_size=24, batch_size=2, augmentation=augmentation, seed=seed
            ),
            4,
        )

    first, again, other = run(5), run(5), run(6)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert any(not np.array_equal(x1, x3) for (x1, _), (x3, _) in zip(first, other, strict=True))


def test_every_image_is_visited_once_per_pass():
    # Constant images with distinct values reveal which image each crop came from.
    images = [np.full((20, 20, 3), value / 10, np.float32) for value in range(5)]
    labels = [np.zeros((20, 20), np.int32) for _ in range(5)]
    packed = pipeline.pack_samples(images, labels)
    dataset = pipeline.make_training_dataset(
        packed, crop_size=8, batch_size=5, augmentation=pipeline.NO_AUGMENTATION, seed=3
    )
    for images_batch, _ in batches(dataset, 3):
        assert sorted(np.round(images_batch[:, 0, 0, 0] * 10).astype(int)) == [0, 1, 2, 3, 4]


def test_small_images_are_padded_never_upscaled():
    packed, _, labels = synthetic([(12, 20)])
    dataset = pipeline.make_training_dataset(
        packed, crop_size=32, batch_size=1, augmentation=pipeline.NO_AUGMENTATION, seed=0,
        target_fn=lambda lab: tf.cast(lab, tf.float32)[..., None],
    )  # fmt: skip
    images, targets = next(iter(dataset))
    target = targets.numpy()[0, ..., 0]
    # The whole image sits inside the crop at native size: every label pixel is kept once.
    assert np.count_nonzero(target) == np.count_nonzero(labels[0])
    rows, cols = np.nonzero(images.numpy()[0, ..., 2])
    assert rows.max() - rows.min() + 1 == 12 and cols.max() - cols.min() + 1 == 20


@pytest.mark.parametrize(
    "augmentation",
    [pipeline.Augmentation(brightness=0, contrast=(1, 1), gamma=(1, 1)),
     pipeline.Augmentation(brightness=0, contrast=(1, 1), gamma=(1, 1), affine=True, elastic=True)],
    ids=["flips+rotations", "affine+elastic"],
)  # fmt: skip
def test_geometry_is_applied_identically_to_image_and_labels(augmentation):
    packed, _, _ = synthetic([(64, 64), (80, 48)])
    dataset = pipeline.make_training_dataset(
        packed, crop_size=32, batch_size=4, augmentation=augmentation, seed=2,
        target_fn=lambda lab: tf.cast(lab, tf.float32)[..., None],
    )  # fmt: skip
    for images, targets in batches(dataset, 3):
        encoded = np.round(images[..., 0] * 10)
        labels = targets[..., 0]
        if augmentation.affine:
            # Bilinear image and nearest-neighbour labels agree away from object edges.
            assert np.mean(encoded == labels) > 0.9
        else:
            np.testing.assert_array_equal(encoded, labels)


def test_intensity_augmentation_changes_only_the_image():
    packed, _, _ = synthetic([(32, 32)])
    geometry_only = pipeline.Augmentation(
        flips=False, rotations=False, brightness=0, contrast=(1, 1), gamma=(1, 1)
    )
    full = pipeline.Augmentation(flips=False, rotations=False, brightness=0.2)
    plain = batches(
        pipeline.make_training_dataset(
            packed, crop_size=32, batch_size=1, augmentation=geometry_only
        ),
        1,
    )
    changed = batches(
        pipeline.make_training_dataset(packed, crop_size=32, batch_size=1, augmentation=full), 1
    )
    np.testing.assert_array_equal(plain[0][1], changed[0][1])
    assert not np.allclose(plain[0][0], changed[0][0])


def test_target_functions_are_pluggable_by_name_or_callable():
    packed, _, _ = synthetic([(32, 32)])

    def two_channels(labels):
        foreground = tf.cast(labels > 0, tf.float32)
        return tf.stack([foreground, 1.0 - foreground], -1)

    dataset = pipeline.make_training_dataset(
        packed, crop_size=16, batch_size=2, target_fn=two_channels
    )
    _, targets = next(iter(dataset))
    assert targets.shape == (2, 16, 16, 2)
    np.testing.assert_array_equal(targets.numpy().sum(-1), 1.0)
    with pytest.raises(ValueError, match="unknown target"):
        pipeline.get_target_fn("no-such-target")


def test_every_named_target_gives_its_channel_count():
    labels = tf.constant(disc_labels((16, 16), [((8, 8), 4)]))
    for name in pipeline.TARGETS:
        targets = pipeline.get_target_fn(name)(labels)
        assert targets.shape == (16, 16, pipeline.target_channels(name))
    with pytest.raises(ValueError, match="unknown target 'no-such-target'"):
        pipeline.target_channels("no-such-target")


def test_validation_tiles_cover_every_pixel_once_or_more():
    packed, images, _ = synthetic([(40, 50), (20, 20)])
    dataset = pipeline.make_validation_dataset(packed, crop_size=32, batch_size=3)
    crops = np.concatenate([x for x, _ in batches(dataset, 100)])
    # 40x50 needs 2x2 tiles, 20x20 one padded tile.
    assert crops.shape == (5, 32, 32, 3)
    np.testing.assert_allclose(crops[0], images[0][:32, :32], atol=1e-4)
    np.testing.assert_allclose(crops[3], images[0][8:40, 18:50], atol=1e-4)
    assert not crops[4][20:].any()


def test_validation_tiles_spread_evenly_over_long_sides():
    packed, images, _ = synthetic([(16, 80)])
    dataset = pipeline.make_validation_dataset(packed, crop_size=32, batch_size=4)
    crops = np.concatenate([x for x, _ in batches(dataset, 100)])
    # 80 columns take three tiles, as back-to-back tiles would, but they start at 0, 24 and
    # 48: each pair of neighbours shares 8 columns, instead of the last two sharing 16.
    assert crops.shape == (3, 32, 32, 3)
    for crop, left in zip(crops, (0, 24, 48), strict=True):
        np.testing.assert_allclose(crop[:16], images[0][:, left : left + 32], atol=1e-4)
        assert not crop[16:].any()


def test_pack_samples_rejects_mismatched_input():
    with pytest.raises(ValueError, match="image"):
        pipeline.pack_samples([np.zeros((4, 4, 3), np.float32)], [np.zeros((4, 5), np.int32)])
    with pytest.raises(ValueError, match="equally many"):
        pipeline.pack_samples([], [])


def test_bad_augmentation_settings_are_rejected():
    with pytest.raises(ValueError, match="gamma"):
        pipeline.Augmentation(gamma=(1.2, 0.8))


def test_border_target_marks_edges_and_contact_lines():
    labels = np.zeros((12, 16), np.int32)
    labels[2:10, 2:8] = 1
    labels[2:10, 8:14] = 2  # Touches nucleus 1 along column 7/8.
    targets = pipeline.border_target(tf.constant(labels), width=1).numpy()
    foreground, border = targets[..., 0], targets[..., 1]
    np.testing.assert_array_equal(foreground, labels > 0)
    assert border[5, 7] == 1 and border[5, 8] == 1  # The contact line, on both sides.
    assert border[2, 4] == 1 and border[5, 2] == 1  # The outer edge.
    assert border[5, 4] == 0 and border[5, 11] == 0  # The interiors.
    assert not border[labels == 0].any()
    assert pipeline.target_channels("border") == targets.shape[-1]


def test_contact_zone_covers_the_gap_between_nuclei_and_nothing_else():
    labels = np.zeros((12, 24), np.int32)
    labels[2:10, 2:8] = 1
    labels[2:10, 10:16] = 2  # A two-pixel gap (columns 8 and 9) from nucleus 1.
    labels[2:10, 22:24] = 3  # Seven pixels from nucleus 2: beyond twice a distance of 3.
    zone = pipeline.contact_zone(tf.constant(labels), distance=3).numpy()
    assert zone[5, 8] and zone[5, 9]  # The gap itself.
    assert zone[5, 7] and zone[5, 10]  # The facing edges of both nuclei.
    assert not zone[5, 3] and not zone[5, 14]  # Interiors away from the gap.
    assert not zone[:, 17:].any()  # Nucleus 3 has no neighbour within 3 pixels.
    assert not pipeline.contact_zone(tf.constant(labels), distance=1).numpy()[5, 7]


def test_contact_weights_append_a_weight_channel():
    labels = np.zeros((12, 24), np.int32)
    labels[2:10, 2:8], labels[2:10, 9:16] = 1, 2
    target_fn = pipeline.with_contact_weights("border", weight=4.0, distance=2)
    targets = target_fn(tf.constant(labels)).numpy()
    assert targets.shape == (12, 24, pipeline.target_channels("border") + 1)
    np.testing.assert_array_equal(targets[..., :2], pipeline.border_target(tf.constant(labels)))
    assert set(np.unique(targets[..., 2])) == {1.0, 5.0}
    assert targets[5, 8, 2] == 5.0 and targets[5, 4, 2] == 1.0
    with pytest.raises(ValueError, match="weight"):
        pipeline.with_contact_weights("border", weight=-1.0)


def test_center_distance_of_a_square_counts_rings_inwards():
    labels = np.zeros((11, 11), np.int32)
    labels[2:9, 2:9] = 5  # A 7x7 square: rings at distance 1, 2, 3 and the centre pixel at 4.
    distance = pipeline.center_distance(tf.constant(labels)).numpy()
    np.testing.assert_allclose(distance[5, :], [0, 0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0, 0])
    np.testing.assert_allclose(distance, distance.T)
    assert not distance[labels == 0].any()


@pytest.mark.parametrize("radius", [4, 9, 20])
def test_center_distance_peaks_at_one_in_every_nucleus_and_dips_where_they_touch(radius):
    # Two touching discs of any size, with label values far apart, beside a lone small one.
    width = 5 * radius + 10
    labels = disc_labels((2 * radius + 10, width), [((radius + 5, radius + 5), radius)])
    right = disc_labels(labels.shape, [((radius + 5, 3 * radius + 4), radius)])
    labels = np.where(right > 0, 900, labels)
    labels[1:4, width - 4 : width - 1] = 2
    distance = pipeline.center_distance(tf.constant(labels)).numpy()
    for value in (1, 900, 2):
        assert distance[labels == value].max() == pytest.approx(1.0)
        assert distance[labels == value].min() > 0
    # Where the two discs meet, both sides are edge pixels: the map is 1 / peak there.
    row = radius + 5
    contact = [column for column in range(1, width) if labels[row, column - 1] == 1
               and labels[row, column] == 900]  # fmt: skip
    assert distance[row, contact[0] - 1] < 0.35 and distance[row, contact[0]] < 0.35


def test_center_distance_is_about_the_same_at_twice_the_size():
    small = disc_labels((40, 40), [((20, 20), 8)])
    large = disc_labels((80, 80), [((40, 40), 16)])
    small_map = pipeline.center_distance(tf.constant(small)).numpy()
    large_map = pipeline.center_distance(tf.constant(large)).numpy()[::2, ::2]
    inside = (small > 0) & (large[::2, ::2] > 0)
    # About one ring of the small disc (1/8) at most, where the pixel grids of the two
    # outlines differ; the distances themselves differ two-fold.
    difference = np.abs(small_map - large_map)[inside]
    assert difference.mean() < 0.06 and difference.max() < 0.15


def test_center_target_adds_the_centre_map_to_the_border_targets():
    labels = tf.constant(disc_labels((32, 48), [((16, 14), 9), ((16, 31), 9)]))
    targets = pipeline.center_target(labels).numpy()
    assert targets.shape == (32, 48, pipeline.target_channels("center"))
    np.testing.assert_array_equal(targets[..., :2], pipeline.border_target(labels))
    np.testing.assert_array_equal(targets[..., 2], pipeline.center_distance(labels))


@pytest.mark.slow
@pytest.mark.parametrize("target, weight", [("border", 5.0), ("center", 0.0), ("center", 5.0)])
def test_a_model_learns_each_target_with_and_without_contact_weights(target, weight):
    import keras

    from unet_tf import keras_metrics, losses, model

    labels = disc_labels((32, 32), [((12, 10), 6), ((12, 22), 6), ((24, 16), 5)])
    image = (labels > 0).astype(np.float32)[..., None].repeat(3, -1)
    samples = pipeline.pack_samples([image], [labels])
    target_fn = pipeline.with_contact_weights(target, weight=weight) if weight else target
    target_fn = pipeline.get_target_fn(target_fn)
    dataset = pipeline.make_training_dataset(samples, 16, 2, target_fn, seed=0)
    whole = pipeline.make_validation_dataset(samples, 16, 2, target_fn).cache()
    keras.utils.set_random_seed(0)
    net = model.get_model(num_classes=pipeline.target_channels(target), depth=1, base_filters=4)
    net.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=losses.get_loss("bce_dice", pixel_weights=bool(weight)),
        metrics=[keras_metrics.PixelIoU(channel=0)],
    )
    before = net.evaluate(whole, verbose=0, return_dict=True)
    net.fit(dataset, steps_per_epoch=100, epochs=1, verbose=0)
    after = net.evaluate(whole, verbose=0, return_dict=True)
    # The image is its own answer (bright exactly on the nuclei): a few steps must learn it.
    assert after["loss"] < 0.6 * before["loss"]
    assert after["pixel_iou"] > 0.8
