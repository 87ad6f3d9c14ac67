"""Nuclei of every look: the input representation, zoom and colour augmentation, balanced
sampling, the budget schedule and automatic rescaling at inference."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_TRAINING, disc_labels
from scipy import ndimage

from unet_tf import appearance, evaluation, inference, pipeline, training

SHAPE = (64, 80)
DISCS = [((20, 20), 8), ((40, 55), 10), ((50, 15), 5)]


def painted(labels, nucleus, background, noise=0.0, seed=0):
    """An RGB image of ``labels`` with one colour inside nuclei and another outside."""
    image = np.where(labels[..., None] > 0, nucleus, background).astype(np.float32)
    if noise:
        image += np.random.default_rng(seed).normal(0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


LOOKS = {
    "fluorescence": ((0.1, 0.8, 0.3), (0.02, 0.03, 0.02)),
    "dim fluorescence": ((0.05, 0.1, 0.12), (0.01, 0.01, 0.01)),
    "stained (H&E-like)": ((0.45, 0.2, 0.6), (0.95, 0.8, 0.9)),
    "brightfield": ((0.3, 0.3, 0.3), (0.75, 0.75, 0.75)),
}


@pytest.mark.parametrize("look", list(LOOKS))
def test_every_look_of_the_same_discs_gives_the_same_network_input(look):
    labels = disc_labels(SHAPE, DISCS)
    reference = appearance.nuclei_bright(painted(labels, *LOOKS["fluorescence"])).numpy()
    other = appearance.nuclei_bright(painted(labels, *LOOKS[look])).numpy()
    assert other.shape == (*SHAPE, 1) and other.dtype == np.float32
    np.testing.assert_allclose(other, reference, atol=1e-5)
    # With camera noise too: nuclei bright, background dark, whatever the look.
    noisy = appearance.nuclei_bright(painted(labels, *LOOKS[look], noise=0.005)).numpy()
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0
    assert noisy[labels > 0].mean() > 0.8 and noisy[labels == 0].mean() < 0.2


@pytest.mark.parametrize("look", ["fluorescence", "brightfield"])
def test_a_lone_nucleus_does_not_turn_background_noise_into_nuclei(look):
    # One nucleus of 50 pixels in 128x128: 0.3 % of the image, so the 99.8th percentile
    # lies in the background noise.
    labels = disc_labels((128, 128), [((60, 60), 4)])
    image = appearance.nuclei_bright(painted(labels, *LOOKS[look], noise=0.01)).numpy()[..., 0]
    assert image[labels > 0].mean() > 0.8
    assert image[labels == 0].mean() < 0.15


def test_a_flat_image_stays_flat_and_the_representation_has_one_channel():
    flat = appearance.nuclei_bright(np.full((16, 16, 3), 0.4, np.float32)).numpy()
    assert np.ptp(flat) == 0.0
    assert appearance.input_channels("nuclei_bright") == 1
    assert appearance.input_channels("rgb") == 3
    with pytest.raises(ValueError, match="unknown representation 'hsv'"):
        appearance.input_channels("hsv")
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(appearance.to_model_input(image, 3), image)
    assert appearance.to_model_input(image, 1).shape == (8, 8, 1)


def one_channel_threshold_model():
    """A 1-channel model marking pixels brighter than 0.5: nuclei of the representation."""
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", name="threshold")(inputs)
    net = keras.Model(inputs, outputs)
    net.get_layer("threshold").set_weights(
        [np.full((1, 1, 1, 1), 20.0, np.float32), np.array([-10.0], np.float32)]
    )
    return net


SETTINGS = {
    "postprocess": {"method": "components", "threshold": 0.5, "min_area": 5},
    "tta": False,
    "tile_size": 64,
}


def test_inference_feeds_a_one_channel_model_the_representation():
    labels = disc_labels(SHAPE, DISCS)
    net = one_channel_threshold_model()
    for look in LOOKS.values():
        found = inference.segment(net, painted(labels, *look), SETTINGS)
        assert found.max() == 3
        np.testing.assert_array_equal(found > 0, labels > 0)


def test_automatic_rescaling_brings_nuclei_to_the_training_size_and_labels_back():
    big = disc_labels((160, 200), [((50, 50), 20), ((110, 140), 24), ((40, 150), 18)])
    image = painted(big, *LOOKS["stained (H&E-like)"])
    net = one_channel_threshold_model()
    # Nuclei about 42 pixels across, trained at 10: a quarter, within the tolerance.
    scale = inference.estimate_scale(net, image, nucleus_diameter=10.0, tile_size=64)
    assert 0.25 <= scale <= 0.3
    settings = {**SETTINGS, "rescale": True, "nucleus_diameter": 10.0}
    output, used = inference.predict(net, image, settings)
    assert used == scale and output.shape[:2] == big.shape
    found = inference.to_labels(output, settings)
    assert found.max() == 3
    overlap = ((found > 0) & (big > 0)).sum() / ((found > 0) | (big > 0)).sum()
    assert overlap > 0.9
    # A size the user knows gives the factor directly; images of the training size stay.
    known = {**settings, "image_nucleus_diameter": 20.0}
    assert inference.image_scale(net, image, known) == pytest.approx(0.5)
    small = disc_labels(SHAPE, [((20, 20), 5), ((40, 50), 5)])
    assert inference.estimate_scale(net, painted(small, *LOOKS["fluorescence"]), 10.0) == 1.0
    assert inference.image_scale(net, image, {**settings, "rescale": False}) == 1.0


def packed_discs(look="fluorescence"):
    labels = disc_labels((96, 96), [((30, 30), 10), ((60, 70), 12), ((75, 20), 7)])
    return pipeline.pack_samples([painted(labels, *LOOKS[look])], [labels])


@pytest.mark.parametrize("representation", ["rgb", "nuclei_bright"])
def test_zoom_blur_noise_and_colour_weights_keep_image_and_labels_aligned(representation):
    augmentation = pipeline.Augmentation(
        max_scale=2.0, blur=1.0, noise=0.02, channel_weights=True, brightness=0.0
    )
    dataset = pipeline.make_training_dataset(
        packed_discs("stained (H&E-like)" if representation != "rgb" else "fluorescence"),
        crop_size=64,
        batch_size=8,
        target_fn="binary",
        augmentation=augmentation,
        seed=3,
        representation=representation,
    )
    images, targets = next(iter(dataset))
    channels = 1 if representation == "nuclei_bright" else 3
    assert images.shape == (8, 64, 64, channels)
    brightness = images.numpy().mean(axis=-1)
    nuclei = brightness > 0.5 * brightness.max()
    truth = targets.numpy()[..., 0] > 0
    assert set(np.unique(targets.numpy())) <= {0.0, 1.0}
    overlap = (nuclei & truth).sum() / max(1, (nuclei | truth).sum())
    assert overlap > 0.8


CROP_LABELS = disc_labels((96, 96), [((30, 30), 10), ((60, 70), 12), ((75, 20), 7)])


def crops_with_and_without(**change):
    """16 seeded crops of a fluorescence crop as nuclei_bright gives it (nuclei at 0.9,
    background black), each made with the augmentation ``change`` and without it, only
    the change differing; the labels of the two are checked to be equal."""
    image = tf.constant(np.where(CROP_LABELS > 0, 0.9, 0.0).astype(np.float32)[..., None])
    labels = tf.constant(CROP_LABELS)
    plain = pipeline.Augmentation(
        flips=False, rotations=False, brightness=0.0, contrast=(1, 1), gamma=(1, 1)
    )
    changed = dataclasses.replace(plain, **change)
    pairs = []
    for seed in range(16):
        key = tf.constant([seed, 1], tf.int64)
        crop, crop_labels = pipeline.augment_sample(image, labels, 96, changed, key)
        unchanged, same_labels = pipeline.augment_sample(image, labels, 96, plain, key)
        np.testing.assert_array_equal(crop_labels.numpy(), same_labels.numpy())
        pairs.append((crop.numpy()[..., 0], unchanged.numpy()[..., 0]))
    return pairs


def test_tissue_lies_behind_the_nuclei_and_leaves_them_and_the_labels_as_they_were():
    with_tissue = []
    for crop, unchanged in crops_with_and_without(tissue=0.6):
        nuclei = CROP_LABELS > 0
        np.testing.assert_array_equal(crop[nuclei], unchanged[nuclei])
        background = crop[~nuclei]
        assert background.max() <= 0.6 + 1e-6
        if background.max() > 0:
            with_tissue.append(background)
    # Half the crops, on average, get tissue; where they do, it is textured, not flat.
    assert 3 <= len(with_tissue) <= 13
    assert all(np.std(background) > 0.01 for background in with_tissue)
    assert np.mean([np.mean(background > 0.01) for background in with_tissue]) > 0.2


def test_lower_resolution_blurs_half_the_crops_and_leaves_the_labels():
    edges = []
    for crop, sharp in crops_with_and_without(low_resolution=4.0):
        if not np.allclose(crop, sharp):
            # Softer edges: the steepest step between neighbours is lower; the mean stays.
            edges.append(np.abs(np.diff(crop, axis=1)).max() / np.abs(np.diff(sharp, axis=1)).max())
            assert crop.mean() == pytest.approx(sharp.mean(), rel=0.05)
    assert 3 <= len(edges) <= 13
    assert max(edges) < 0.9
    with pytest.raises(ValueError, match="low_resolution must be at least 1"):
        pipeline.Augmentation(low_resolution=0.5)
    with pytest.raises(ValueError, match="resolution_augmentation must be in"):
        training.TrainingConfig(resolution_augmentation=2.0)


def test_zoom_changes_the_size_of_nuclei_in_the_crops():
    areas = []
    for max_scale in (1.0, 3.0):
        augmentation = pipeline.Augmentation(max_scale=max_scale, flips=False, rotations=False)
        dataset = pipeline.make_training_dataset(
            packed_discs(), 64, 16, "binary", augmentation, seed=1
        )
        _, targets = next(iter(dataset))
        areas.append(targets.numpy().reshape(16, -1).mean(axis=1))
    assert np.std(areas[1]) > 1.5 * np.std(areas[0])


@pytest.mark.parametrize("deformation", [{}, {"affine": True, "scale": (1.0, 1.0), "shear": 0.0}])
def test_size_normalisation_zooms_each_image_by_its_factor_with_its_labels(deformation):
    # One disc of radius 10 in a large empty image: its crops hold the whole disc or none
    # of it, so the area a crop shows of it measures the zoom.
    labels = disc_labels((160, 160), [((80, 80), 10)])
    samples = pipeline.pack_samples([painted(labels, *LOOKS["fluorescence"])], [labels])
    augmentation = dataclasses.replace(pipeline.NO_AUGMENTATION, **deformation)
    largest = {}
    for zoom in (1.0, 2.0):
        dataset = pipeline.make_training_dataset(
            samples, 64, 32, "binary", augmentation, seed=2, zooms=[zoom]
        )
        images, targets = next(iter(dataset))
        areas = targets.numpy().reshape(32, -1).sum(axis=1)
        largest[zoom] = areas.max()
        # The image follows its labels: bright on the nucleus, dark beside it.
        inside, gray = targets.numpy()[..., 0] > 0, images.numpy().mean(axis=-1)
        assert gray[inside].mean() > 0.3 > 0.1 > gray[~inside].mean()
    assert largest[1.0] == pytest.approx(np.pi * 10**2, rel=0.1)
    assert largest[2.0] == pytest.approx(4 * np.pi * 10**2, rel=0.1)
    with pytest.raises(ValueError, match="one positive zoom per image"):
        pipeline.make_training_dataset(samples, 64, 2, "binary", zooms=[1.0, 2.0])


def test_balanced_weights_draw_a_rare_image_as_often_as_a_common_kind():
    labels = disc_labels((32, 32), [((16, 16), 6)])
    images = [painted(labels, *LOOKS["fluorescence"])] * 3 + [
        painted(labels, *LOOKS["brightfield"])
    ]
    packed = pipeline.pack_samples(images, [labels] * 4)
    # Only the brightfield image is bright outside its nucleus, at the crops' corner.
    weights = pipeline.balanced_weights(["f", "f", "f", "b"], 1.0)
    dataset = pipeline.make_training_dataset(
        packed, 32, 50, augmentation=pipeline.NO_AUGMENTATION, seed=0, sample_weights=weights
    )
    images_drawn = next(iter(dataset))[0].numpy()
    rare = (images_drawn[:, 0, 0, 0] > 0.5).mean()
    assert 0.3 < rare < 0.7, f"the rare image made {rare:.0%} of the draws"
    with pytest.raises(ValueError, match="one positive weight per image"):
        pipeline.make_training_dataset(packed, 32, 4, sample_weights=[1.0, 1.0])


# Fluorescence ("f"): 12 images from three sources; stained ("s"): 4 images from one source.
SOURCES = ["f a"] * 8 + ["f b"] * 3 + ["f c"] + ["s d"] * 4


@pytest.mark.parametrize("balance", [0.0, 0.5, 1.0])
def test_balancing_by_type_gives_each_type_its_share_whatever_its_sources(balance):
    sources = SOURCES
    types = [source.split()[0] for source in sources]
    weights = pipeline.balanced_weights(sources, balance, groups=types)
    share = weights / weights.sum()
    stained = share[-4:].sum()
    assert stained == pytest.approx(4 ** (1 - balance) / (4 ** (1 - balance) + 12 ** (1 - balance)))
    # Within a type the sources are balanced as they are without types.
    alone = pipeline.balanced_weights(sources[:12], balance)
    np.testing.assert_allclose(share[:12] / share[:12].sum(), alone / alone.sum())
    if balance == 0.0:
        np.testing.assert_allclose(share, 1 / len(sources))


@pytest.mark.parametrize(("balance_by", "stained_share"), [("source", 0.25), ("type", 0.5)])
def test_training_draws_by_the_configured_balance(balance_by, stained_share):
    sources = ["fluorescence 256x256"] * 8 + ["fluorescence 360x360"] * 3
    sources += ["fluorescence 696x520"] + ["stained 320x256"] * 4
    config = training.TrainingConfig(balance=1.0, balance_by=balance_by)
    weights = training.sampling_weights(sources, config)
    assert weights[-4:].sum() / weights.sum() == pytest.approx(stained_share)


def test_balancing_by_source_lets_many_small_sources_outweigh_one_large_one():
    sources = SOURCES
    by_source = pipeline.balanced_weights(sources, 1.0)
    by_type = pipeline.balanced_weights(sources, 1.0, groups=[s[0] for s in sources])
    assert by_source[-4:].sum() / by_source.sum() == pytest.approx(0.25)
    assert by_type[-4:].sum() / by_type.sum() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="groups has 2 entries for 16 kinds"):
        pipeline.balanced_weights(sources, 1.0, groups=["f", "s"])
    with pytest.raises(ValueError, match=r"kinds \['x'\] lie in more than one group"):
        pipeline.balanced_weights(["x", "x", "y"], 1.0, groups=["f", "s", "s"])


def test_the_budget_schedule_warms_up_then_decays_to_the_end_of_the_budget():
    schedule = training.BudgetSchedule(0.001, minutes=10, warmup=0.05, final=0.01)
    rates = [schedule.rate(fraction) for fraction in np.linspace(0, 1, 101)]
    assert rates[0] == pytest.approx(1e-4) and max(rates) == pytest.approx(1e-3)
    peak = int(np.argmax(rates))
    assert peak == 5 and all(np.diff(rates[peak:]) <= 0)
    assert rates[-1] == pytest.approx(1e-5) and schedule.rate(2.0) == rates[-1]


def test_the_budget_schedule_follows_steps_when_they_run_out_before_the_minutes():
    # A run of 10 steps in a budget of a day is planned on its steps; a resumed run counts
    # the steps it continues.
    schedule = training.BudgetSchedule(0.001, minutes=24 * 60, steps=10, spent_steps=5)
    schedule.on_train_begin()
    assert schedule.fraction() == pytest.approx(0.5)
    schedule.step = 10
    assert schedule.rate(schedule.fraction()) == pytest.approx(1e-5)
    endless = training.BudgetSchedule(0.001, minutes=24 * 60)
    endless.on_train_begin()
    endless.step = 10
    assert endless.fraction() < 0.01


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"representation": "hsv"}, "unknown representation"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"balance_by": "size"}, "unknown balance_by"),
        ({"balance": 2.0}, "balance"),
        ({"max_scale": 0.5}, "max_scale"),
        ({"colour_augmentation": 1.5}, "colour_augmentation"),
        ({"tissue_augmentation": -0.1}, "tissue_augmentation"),
        ({"normalised_diameter": -1.0}, "normalised_diameter"),
        ({"normalised_diameter": 2.0}, "normalised_diameter"),
        ({"normalised_diameter": 16.0, "task": "semantic", "target": "binary"}, "instances"),
    ],
)
def test_bad_generalization_parameters_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        training.TrainingConfig(**change)


@pytest.mark.slow
def test_the_generalizing_recipe_trains_a_one_channel_model_and_records_its_nucleus_size(
    disc_folder, tmp_path
):
    root, ids = disc_folder
    config = training.TrainingConfig(
        **{**TINY_TRAINING, "epochs": 1},
        jit_compile=False,
        representation="nuclei_bright",
        max_scale=2.0,
        colour_augmentation=1.0,
        balance=0.5,
        schedule="cosine",
    )
    result = training.train(config, root, ids, tmp_path / "models", verbose=0)
    assert result.model.input_shape[-1] == 1
    record = json.loads(result.paths["record"].read_text())
    # Discs of radius 4 to 7: equivalent diameters of about 9 to 15 pixels.
    assert 8 < record["nucleus_diameter"] < 16
    assert record["parameters"]["representation"] == "nuclei_bright"
    assert float(result.model.optimizer.learning_rate.numpy()) < config.learning_rate
    stained = painted(disc_labels((48, 64), DISCS), *LOOKS["stained (H&E-like)"])
    output = inference.predict_full(result.model, stained, tile_size=64)
    assert output.shape == (48, 64, 2) and np.isfinite(output).all()


@pytest.mark.parametrize("radius", [3, 6, 12])
def test_size_normalisation_brings_every_image_to_the_nucleus_size_with_its_labels(radius):
    discs = [((24, 24), radius), ((24, 64), radius), ((60, 44), radius)]
    labels = disc_labels((88, 96), discs)
    image = np.where(labels > 0, 0.8, 0.1).astype(np.float32)[..., None]
    before = inference.median_diameter(labels)
    (name, resampled, resampled_labels), *_ = inference.size_normalised_samples(
        [("discs", image, labels)], 16.0
    )
    factor = inference.rescale_factor(before, 16.0)
    assert name == "discs"
    assert resampled.shape[:2] == resampled_labels.shape
    assert resampled_labels.shape == inference.scaled_shape(labels.shape, factor)
    # Every nucleus stays one whole label, at about the asked size (or within the
    # tolerance, where the image is left as it was).
    np.testing.assert_array_equal(np.unique(resampled_labels), [0, 1, 2, 3])
    after = inference.median_diameter(resampled_labels)
    assert 16.0 / inference.SCALE_TOLERANCE - 1 <= after <= 16.0 * inference.SCALE_TOLERANCE + 1
    # The image follows its labels: bright inside the nuclei, dark outside, away from edges.
    inside = ndimage.binary_erosion(resampled_labels > 0, iterations=2)
    outside = ndimage.binary_erosion(resampled_labels == 0, iterations=2)
    assert resampled[inside].min() > 0.7 and resampled[outside].max() < 0.2


def test_the_rescale_factor_leaves_near_sizes_alone_and_is_bounded():
    assert inference.rescale_factor(16.0, 16.0) == 1.0
    assert inference.rescale_factor(14.0, 16.0) == 1.0  # within SCALE_TOLERANCE
    assert inference.rescale_factor(8.0, 16.0) == pytest.approx(2.0)
    assert inference.rescale_factor(64.0, 16.0) == pytest.approx(0.25)
    assert inference.rescale_factor(1.0, 16.0) == inference.MAX_SCALE
    # Nuclei of six times the training size are shrunk to it, further ones by MAX_SHRINK.
    assert inference.rescale_factor(96.0, 16.0) == pytest.approx(1 / 6)
    assert inference.rescale_factor(1000.0, 16.0) == 1 / inference.MAX_SHRINK
    assert inference.rescale_factor(None, 16.0) == 1.0
    with pytest.raises(ValueError, match="positive"):
        inference.size_normalised_samples([], 0.0)


@pytest.mark.slow
def test_a_size_normalised_run_records_the_size_it_trained_at(disc_folder, tmp_path):
    root, ids = disc_folder
    config = training.TrainingConfig(
        **{**TINY_TRAINING, "epochs": 1}, jit_compile=False, normalised_diameter=24.0
    )
    result = training.train(config, root, ids, tmp_path / "models", verbose=0)
    record = json.loads(result.paths["record"].read_text())
    # The discs (about 9 to 15 pixels) were seen enlarged to about 24: inference rescales
    # new images to the size the network trained at, not to the images' own sizes.
    assert record["nucleus_diameter"] == 24.0
    assert record["parameters"]["normalised_diameter"] == 24.0


def test_a_run_recorded_before_a_parameter_existed_counts_as_what_it_did(disc_model_path, tmp_path):
    # Runs recorded before the tissue augmentation existed trained without it.
    before = training.TrainingConfig(model_name="old", tissue_augmentation=0.0)
    paths = before.paths(tmp_path)
    paths["model"].write_bytes(disc_model_path.read_bytes())
    parameters = dataclasses.asdict(before)
    del parameters["tissue_augmentation"]
    record = {"parameters": parameters, "excluded_ids": ["a"]}
    paths["record"].write_text(json.dumps(record))
    assert training.recorded_parameters(parameters)["tissue_augmentation"] == 0.0
    assert training.finished_run(before, tmp_path, ["a"]) is not None
    # The same record does not stand for today's default (tissue augmentation on), nor for
    # a run that excluded other images, nor with a parameter this version does not know.
    assert training.TrainingConfig().tissue_augmentation > 0
    today = training.TrainingConfig(model_name="old")
    assert training.finished_run(today, tmp_path, ["a"]) is None
    assert training.finished_run(before, tmp_path, ["b"]) is None
    paths["record"].write_text(json.dumps({**record, "parameters": {**parameters, "x": 1}}))
    assert training.finished_run(before, tmp_path, ["a"]) is None


def test_the_generalization_check_reads_a_candidate_recipe():
    path = Path(__file__).parents[1] / "benchmarks" / "generalization.py"
    spec = importlib.util.spec_from_file_location("generalization", path)
    generalization = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generalization)

    assert generalization.parse_overrides(["tissue_augmentation=0.5", "balance=1"]) == {
        "tissue_augmentation": 0.5,
        "balance": 1.0,
    }
    assert generalization.parse_overrides(["jit_compile=false"]) == {"jit_compile": False}
    bad_items = (["tissue_augmentation"], ["colour=1"], ["epochs=many"], ["balance=3"])
    for bad in (*bad_items, ["jit_compile=maybe"]):
        with pytest.raises(ValueError):
            generalization.parse_overrides(bad)
    # A recipe name --only does not know is refused before any data is read.
    assert generalization.main(["--only", "newest"]) == 2


class FragmentingNetwork:
    """A stand-in for a network trained on nuclei up to ``largest`` pixels across: it marks
    those whole and sure (0.97), and cuts larger ones into unsure 6-pixel pieces (0.7), as
    a real network does with nuclei far larger than its training ones."""

    depth, channels = 2, 1

    def __init__(self, largest: float):
        self.largest = largest

    def predict_on_batch(self, batch):
        from scipy import ndimage

        outputs = []
        for tile in np.asarray(batch)[..., 0]:
            blobs, count = ndimage.label(tile > 0.5)
            radius = ndimage.maximum(
                ndimage.distance_transform_edt(blobs > 0), blobs, np.arange(1, count + 1)
            )
            large = np.isin(blobs, 1 + np.flatnonzero(2 * np.asarray(radius) > self.largest))
            rows, cols = np.indices(tile.shape)
            pieces = large & ((rows // 6 + cols // 6) % 2 == 0) & (rows % 6 > 0) & (cols % 6 > 0)
            output = np.where(blobs > 0, 0.97, 0.02)
            output = np.where(large, np.where(pieces, 0.7, 0.02), output)
            outputs.append(output[..., None].astype(np.float32))
        return np.stack(outputs)


def _discs(radius: int, side: int = 1024) -> np.ndarray:
    """A fluorescence image of ``side`` pixels holding 25 discs of ``radius``."""
    step = (side - 100) // 5
    centres = [(100 + step * (i // 5), 100 + step * (i % 5)) for i in range(25)]
    return painted(
        disc_labels((side, side), [(c, radius) for c in centres]), *LOOKS["fluorescence"]
    )


@pytest.mark.slow
def test_the_size_estimate_is_not_fooled_by_large_nuclei_cut_into_pieces():
    net = FragmentingNetwork(largest=30)
    # Nuclei 48 pixels across: at their own size the network sees pieces about 6 across.
    image = _discs(24)
    output = inference.predict_full(net, image, tile_size=1024)
    pieces = inference.to_instances(output, "components", threshold=0.5, min_area=5)
    assert inference.median_diameter(pieces) < 10
    # A half and a quarter show them whole, 24 and 12 across; 24 is the training size.
    assert inference.estimate_scale(net, image, nucleus_diameter=24.0, tile_size=1024) == 0.5
    # Nuclei that are small are not taken for pieces: they are enlarged to the training size.
    scale = inference.estimate_scale(net, _discs(5), 24.0, tile_size=1024)
    assert 2.0 <= scale <= 2.8


@pytest.mark.slow
def test_the_size_estimate_does_not_enlarge_an_image_whose_pieces_do_not_grow_with_it():
    # An image too small for the probes (400 pixels): its first pass finds 6-pixel pieces of
    # 48-pixel nuclei, which asks for 4x. At 4x the network still finds 6-pixel pieces: in
    # the image's own pixels they shrank fourfold, so they are not nuclei, and the image
    # is left as it is instead of enlarged (the estimate before the check gave 4.0).
    net = FragmentingNetwork(largest=30)
    assert inference.estimate_scale(net, _discs(24, side=400), 24.0, tile_size=1024) == 1.0
    # Small nuclei grow with the image, and are enlarged to the training size as before.
    scale = inference.estimate_scale(net, _discs(5, side=400), 24.0, tile_size=1024)
    assert 2.0 <= scale <= 2.8


@pytest.mark.parametrize(
    ("before", "after", "grew"),
    [
        ((1.0, 8.0), (2.0, 16.0), True),  # nuclei that doubled with the image
        ((1.0, 8.0), (2.0, 12.0), True),  # 6 in the image's pixels: within sqrt(2) of 8
        ((1.0, 8.0), (2.0, 11.0), False),  # 5.5: beyond it
        ((1.0, 8.0), (2.0, 8.0), False),  # one size in the network's pixels at any scale
        ((1.0, 8.0), (2.0, None), False),  # nothing found in the enlarged image
        ((1.0, 16.0), (0.5, 16.0), True),  # shrunk: pieces join into whole nuclei there
    ],
)
def test_a_size_pass_in_an_enlarged_image_is_believed_if_its_objects_grew(before, after, grew):
    assert inference._grew_with_image(before, after) is grew


class SameSizeNetwork:
    """A stand-in for a network that, on a shrunk image, takes whatever is bright for
    nuclei of the one size it knows (whole cells in a brightfield image, say): sure discs
    16 pixels across on a 20-pixel grid, at any scale. At the image's own size (tiles over
    600 pixels) it finds unsure 6-pixel specks there instead."""

    depth, channels = 2, 1

    def predict_on_batch(self, batch):
        outputs = []
        for tile in np.asarray(batch)[..., 0]:
            rows, cols = np.indices(tile.shape)
            near = np.hypot((rows % 20) - 10, (cols % 20) - 10)
            own_size = tile.shape[0] > 600
            found = (near < 3) if own_size else (near < 8)
            output = np.where((tile > 0.5) & found, 0.7 if own_size else 0.97, 0.02)
            outputs.append(output[..., None].astype(np.float32))
        return np.stack(outputs)


@pytest.mark.slow
def test_the_size_estimate_ignores_probes_that_find_nuclei_of_one_size_at_any_scale():
    # The probes find more area, and are surer of it, but their nuclei are 16 pixels
    # across at a half and at a quarter: 32 and 64 in the image's own pixels.
    image = painted(disc_labels((1024, 1024), [((512, 512), 400)]), *LOOKS["fluorescence"])
    scale = inference.estimate_scale(SameSizeNetwork(), image, 16.0, tile_size=1024)
    # Nor are the specks of its own scale believed: enlarged, they stay 6 pixels across in
    # the network's pixels, so they do not grow with the image. It is left as it is.
    assert scale == 1.0


@pytest.mark.parametrize(("scale", "expected"), [(0.25, 240), (0.5, 60), (1.0, 15), (2.0, 15)])
def test_the_smallest_object_grows_with_the_shrinking_of_an_image_only(scale, expected):
    tuned = {"method": "components", "threshold": 0.5, "min_area": 15}
    assert inference.scaled_postprocess(tuned, scale)["min_area"] == expected
    assert tuned["min_area"] == 15


def test_fragments_of_a_shrunk_image_are_dropped_and_its_nuclei_kept():
    # Output at the image's own size of an image segmented at a quarter of it: a nucleus
    # 80 pixels across and a fragment of 113 pixels, 7 pixels at the scale segmented.
    truth = disc_labels((256, 256), [((80, 80), 40)])
    output = (disc_labels((256, 256), [((80, 80), 40), ((200, 200), 6)]) > 0)[..., None]
    output = output.astype(np.float32)
    tuned = {"method": "components", "threshold": 0.5, "min_area": 15}
    assert inference.to_labels(output, {"postprocess": tuned}).max() == 2
    found = inference.to_labels(output, {"postprocess": tuned}, scale=0.25)
    assert found.max() == 1 and found[80, 80] == 1
    sample = ("a", np.zeros((256, 256, 3), np.float32), truth)
    assert evaluation.score([sample], [output], tuned).dsb_score[0] == 0.5
    assert evaluation.score([sample], [output], tuned, scales=[0.25]).dsb_score[0] == 1.0
    with pytest.raises(ValueError, match="1 samples, 1 outputs, 2 scales"):
        evaluation.score([sample], [output], tuned, scales=[0.25, 1.0])


def test_the_ablation_row_without_rescaling_is_the_chosen_step_without_it():
    import types

    import pandas as pd

    path = Path(__file__).parents[1] / "benchmarks" / "ablation.py"
    spec = importlib.util.spec_from_file_location("ablation", path)
    ablation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablation)

    components = evaluation.Step("components", False, {"method": "components"})
    border = evaluation.Step("border", False, {"method": "watershed_border"})
    # Tuned connected components won, though the watershed came after them.
    rescaled = evaluation.Step("rescaled", False, components.postprocess, rescale=True)
    scores = {"components": 0.3, "border": 0.2, "rescaled": 0.4}
    results = {name: pd.DataFrame({"dsb_score": [score]}) for name, score in scores.items()}
    tuning = types.SimpleNamespace(
        steps=[components, border, rescaled], chosen=rescaled, results=results
    )
    assert ablation.unscaled_results(tuning) is results["components"]
