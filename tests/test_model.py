"""The U-Net: configurations that fit a step, shapes, padding and saving."""

import keras
import numpy as np
import pytest

from unet_tf import losses, model
from unet_tf.keras_metrics import PixelDice, PixelIoU


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        {"depth": 1, "base_filters": 2, "batch_norm": False},
        {"depth": 2, "base_filters": 4, "dropout_rate": 0.2},
        {"depth": 3, "base_filters": 2, "num_classes": 3, "output_activation": "softmax"},
        {"depth": 2, "base_filters": 2, "input_channels": 1, "num_classes": 2},
    ],
)
def test_configurations_fit_one_step_and_keep_the_input_size(config):
    keras.utils.set_random_seed(0)
    net = model.get_model(**config)
    channels = config.get("input_channels", 3)
    classes = config.get("num_classes", 1)
    images = np.random.default_rng(0).random((2, 32, 32, channels)).astype(np.float32)
    targets = (np.random.default_rng(1).random((2, 32, 32, classes)) > 0.5).astype(np.float32)
    net.compile(optimizer="adam", loss=losses.bce_dice_loss, metrics=[PixelIoU(), PixelDice()])
    history = net.fit(images, targets, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    output = net.predict(images, verbose=0)
    assert output.shape == (2, 32, 32, classes)
    assert output.dtype == np.float32
    assert model.model_depth(net) == config["depth"]


def test_one_model_serves_crops_and_larger_images():
    net = model.get_model(depth=2, base_filters=2)
    for size in [(16, 16), (48, 80)]:
        output = net.predict(np.zeros((1, *size, 3), np.float32), verbose=0)
        assert output.shape == (1, *size, 1)


def test_conv2dtranspose_decoder_and_skip_connections():
    net = model.get_model(depth=3, base_filters=4)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds.count("Conv2DTranspose") == 3
    assert kinds.count("Concatenate") == 3
    assert kinds.count("MaxPooling2D") == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "depth"),
        ({"base_filters": 0}, "base_filters"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"output_activation": "tanh"}, "output_activation"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.get_model(**kwargs)


@pytest.mark.parametrize("shape", [(1, 1, 3), (13, 17, 3), (16, 32, 3), (5, 40), (40, 5, 2)])
def test_pad_to_shape_and_crop_back(shape):
    array = np.random.default_rng(0).random(shape).astype(np.float32)
    padded, original = model.pad_to_shape(array, (16, 24))
    # Sides shorter than asked grow to it; longer ones are left alone.
    assert padded.shape[:2] == (max(shape[0], 16), max(shape[1], 24))
    assert padded.shape[2:] == array.shape[2:]
    np.testing.assert_array_equal(model.crop_to_shape(padded, original), array)
    if min(shape[:2]) > 1 and shape[0] < 16:
        # Reflection mirrors the rows next to the edge, without repeating the edge row.
        np.testing.assert_array_equal(padded[shape[0], : shape[1]], array[shape[0] - 2])


def test_saved_model_round_trip_with_custom_metrics(tmp_path):
    net = model.get_model(depth=1, base_filters=2)
    net.compile(optimizer="adam", loss="binary_crossentropy", metrics=[PixelIoU(threshold=0.4)])
    image = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
    net.fit(image, image[..., :1] > 0.5, epochs=1, verbose=0)
    path = tmp_path / "net.keras"
    net.save(path)
    loaded = keras.models.load_model(path)
    target = (image[..., :1] > 0.5).astype(np.float32)
    assert "pixel_iou" in loaded.evaluate(image, target, verbose=0, return_dict=True)
    np.testing.assert_allclose(loaded.predict(image, verbose=0), net.predict(image, verbose=0))


@pytest.mark.slow
def test_xla_training_matches_plain_training():
    # 02-training compiles with XLA by default: it must train exactly as plain TensorFlow,
    # with the same losses, weights and batch-norm statistics after a few steps.
    images = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    targets = (images[..., :2] > 0.5).astype(np.float32)
    results = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(1)
        net = model.get_model(num_classes=2, depth=2, base_filters=4)
        net.compile(
            optimizer=keras.optimizers.SGD(0.1), loss=losses.bce_dice_loss, jit_compile=jit_compile
        )
        losses_seen = [float(net.train_on_batch(images, targets)) for _ in range(3)]
        norm = net.get_layer("down0_bn1")
        results.append(
            (
                losses_seen,
                norm.moving_mean.numpy(),
                norm.moving_variance.numpy(),
                net.get_layer("head").kernel.numpy(),
                net.predict_on_batch(images),
            )
        )
    for plain, compiled in zip(*results, strict=True):
        np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-5)
    # The moving statistics did move.
    assert not np.allclose(results[0][1], 0.0)
