"""Stained tissue: the haematoxylin channel of ``stain_aware`` and the stain augmentation
(fluorescence painted as H&E tissue, stained images re-stained)."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import disc_labels

from unet_tf import appearance, inference, large, pipeline, training

SHAPE = (64, 80)
DISCS = [((20, 20), 8), ((40, 55), 10), ((50, 15), 5)]
# Beer-Lambert: white light through one unit of haematoxylin (the nuclei) and 0.4 of eosin
# (the cytoplasm), about as dense as they are in H&E sections.
PURPLE, PINK = np.exp(-appearance.stain_matrix()[:2] * [[1.0], [0.4]]).astype(np.float32)


def stained_discs(labels, cytoplasm):
    """H&E-like discs: haematoxylin nuclei, eosin over the ``cytoplasm`` mask, white else."""
    image = np.ones((*labels.shape, 3), np.float32)
    image[cytoplasm] = PINK
    image[labels > 0] = PURPLE
    return image


def test_colour_deconvolution_finds_haematoxylin_and_ignores_eosin():
    pink_unit = np.exp(-appearance.stain_matrix()[1])
    colours = np.stack([PURPLE, pink_unit, np.ones(3), np.full(3, np.exp(-0.5))])
    amounts = appearance.haematoxylin(colours[None].astype(np.float32)).numpy()[0]
    purple, pink, white, gray = amounts
    assert purple == pytest.approx(1.0, abs=1e-4)
    assert pink == pytest.approx(0.0, abs=1e-4)
    assert white == 0.0
    # A gray pixel keeps its contrast: 1.83 times its optical density (0.5 here).
    assert gray == pytest.approx(0.5 * 1.8307, abs=1e-3)


def test_the_nuclear_channel_tells_nuclei_from_pink_cytoplasm_that_gray_does_not():
    labels = disc_labels(SHAPE, DISCS)
    cytoplasm = np.zeros(SHAPE, bool)
    cytoplasm[:, 30:] = True
    image = stained_discs(labels, cytoplasm)
    both = appearance.stain_aware(image).numpy()
    assert both.shape == (*SHAPE, 2) and both.dtype == np.float32
    gray, nuclear = both[..., 0], both[..., 1]
    pink = cytoplasm & (labels == 0)
    # In the gray value the cytoplasm is a third as bright as the nuclei; in the nuclear
    # channel it is background.
    assert gray[pink].mean() > 0.3
    assert nuclear[pink].max() < 0.05
    assert nuclear[labels > 0].min() > 0.95
    np.testing.assert_allclose(gray, appearance.nuclei_bright(image).numpy()[..., 0])


def test_fluorescence_gets_its_one_stain_in_both_channels():
    labels = disc_labels(SHAPE, DISCS)
    image = np.where(labels[..., None] > 0, [0.1, 0.8, 0.3], [0.02, 0.03, 0.02])
    both = appearance.stain_aware(image.astype(np.float32)).numpy()
    np.testing.assert_array_equal(both[..., 1], both[..., 0])
    assert both[..., 0][labels > 0].min() > 0.9


def test_a_block_normalised_with_the_whole_image_statistics_is_a_crop_of_the_whole():
    labels = disc_labels(SHAPE, DISCS)
    cytoplasm = np.zeros(SHAPE, bool)
    cytoplasm[10:50] = True
    image = stained_discs(labels, cytoplasm)
    image += np.random.default_rng(0).normal(0, 0.01, image.shape).astype(np.float32)
    image = np.clip(image, 0, 1)
    whole = appearance.to_model_input(image, 2)
    stats = appearance.stain_statistics(image).numpy()
    assert stats.shape == (5,)
    block = appearance.to_model_input(image[8:40, 16:64], 2, stats)
    np.testing.assert_allclose(block, whole[8:40, 16:64], atol=1e-6)
    # The large-image path hands a two-channel model the same statistics.
    net = keras.Sequential([keras.Input((None, None, 2)), keras.layers.Conv2D(1, 1)])
    np.testing.assert_allclose(large.normalisation_stats(net, image, lambda p: p), stats)


def fluorescence_discs():
    labels = disc_labels(SHAPE, DISCS)
    image = np.where(labels[..., None] > 0, 0.8, 0.03).astype(np.float32)
    return image * np.array([0.3, 1.0, 0.5], np.float32), labels


@pytest.mark.parametrize("seed", range(6))
def test_fluorescence_painted_as_stained_tissue_has_dark_haematoxylin_nuclei(seed):
    image, labels = fluorescence_discs()
    painted = pipeline.stain_augment(tf.constant(image), 1.0, tf.constant([seed, 7], tf.int64))
    painted = painted.numpy()
    assert painted.shape == image.shape and 0.0 <= painted.min() and painted.max() <= 1.0
    # Brightfield now: a bright background, nuclei darker than everything around them.
    assert appearance.statistics(painted).numpy()[0] == 1.0
    nuclei, rest = labels > 0, labels == 0
    assert painted[nuclei].mean() < painted[rest].mean() - 0.15
    # The nuclei are where the labels say, in the nuclear stain.
    amount = appearance.haematoxylin(painted).numpy()
    assert amount[nuclei].min() > amount[rest].max()


def test_stained_images_are_re_stained_and_keep_their_nuclei():
    labels = disc_labels(SHAPE, DISCS)
    cytoplasm = np.zeros(SHAPE, bool)
    cytoplasm[:, :40] = True
    image = stained_discs(labels, cytoplasm)
    changed = []
    for seed in range(6):
        key = tf.constant([seed, 3], tf.int64)
        restained = pipeline.stain_augment(tf.constant(image), 1.0, key).numpy()
        nuclear = appearance.stain_aware(restained).numpy()[..., 1]
        # Other colours, the same nuclei, found in the nuclear channel as before.
        changed.append(np.abs(restained - image).max())
        assert nuclear[labels > 0].mean() > 0.8
        assert nuclear[(labels == 0) & cytoplasm].mean() < 0.3
    assert min(changed) > 0.02


def test_a_share_of_the_images_is_stained_the_others_untouched():
    image, _ = fluorescence_discs()
    untouched = 0
    for seed in range(40):
        key = tf.constant([seed, 1], tf.int64)
        out = pipeline.stain_augment(tf.constant(image), 0.3, key).numpy()
        untouched += np.array_equal(out, image)
        np.testing.assert_array_equal(
            pipeline.stain_augment(tf.constant(image), 0.0, key).numpy(), image
        )
    assert 20 <= untouched <= 36  # 28 expected of 40


def test_the_stain_aware_pipeline_gives_two_channels_and_is_seeded():
    image, labels = fluorescence_discs()
    samples = pipeline.pack_samples([image, image], [labels, labels])
    augmentation = dataclasses.replace(pipeline.NO_AUGMENTATION, stain=0.5, channel_weights=True)

    def batch(seed):
        dataset = pipeline.make_training_dataset(
            samples, 32, 4, "binary", augmentation, seed=seed, representation="stain_aware"
        )
        return next(iter(dataset))[0].numpy()

    first = batch(1)
    assert first.shape == (4, 32, 32, 2)
    np.testing.assert_array_equal(first, batch(1))
    assert not np.array_equal(first, batch(2))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stain_augmentation": 1.5}, "stain_augmentation must be in"),
        ({"representation": "hed"}, "unknown representation 'hed'"),
    ],
)
def test_bad_stain_parameters_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        training.TrainingConfig(**change)
    with pytest.raises(ValueError, match="stain must be in"):
        pipeline.Augmentation(stain=-0.1)


def test_inference_feeds_a_two_channel_model_the_nuclear_channel():
    labels = disc_labels(SHAPE, DISCS)
    cytoplasm = np.zeros(SHAPE, bool)
    cytoplasm[:, 30:] = True
    # A model that marks pixels above 0.2 in the nuclear channel: its nuclei are the
    # stained ones, not the pink cytoplasm (0.35 in the gray value).
    inputs = keras.Input((None, None, 2))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="nuclear")(inputs)
    net = keras.Model(inputs, outputs)
    net.get_layer("nuclear").set_weights(
        [np.array([0.0, 20.0], np.float32).reshape(1, 1, 2, 1), np.array([-4.0], np.float32)]
    )
    settings = {
        "postprocess": {"method": "components", "threshold": 0.5, "min_area": 5},
        "tta": False,
        "tile_size": 64,
    }
    found = inference.segment(net, stained_discs(labels, cytoplasm), settings)
    np.testing.assert_array_equal(found > 0, labels > 0)
    assert appearance.input_channels("stain_aware") == 2
