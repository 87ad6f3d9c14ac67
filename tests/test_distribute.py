"""Multi-device training and mixed precision, checked on the CPU.

The CPU is split into two logical devices, in a fresh process since TensorFlow fixes its
devices when it starts; a ``MirroredStrategy`` over both must train the U-Net as one device
does.
"""

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import keras
import numpy as np
import pytest

from unet_tf import config, model, training

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    from conftest import disc_labels
    from unet_tf import losses, model, pipeline, training

    rng = np.random.default_rng(0)
    labels = [
        disc_labels((48, 48), [((int(y), int(x)), 7) for y, x in rng.integers(8, 40, (3, 2))])
        for _ in range(4)
    ]
    images = [np.repeat((l > 0)[..., None], 3, -1).astype(np.float32) * 0.8 for l in labels]
    samples = pipeline.pack_samples(images, labels)
    results = {}
    for name in ("default", "mirrored"):
        devices = ["/cpu:0", "/cpu:1"] if name == "mirrored" else None
        strategy = training.get_strategy(name, devices)
        keras.utils.set_random_seed(1)
        dataset = pipeline.make_training_dataset(samples, 32, 4, "border", seed=1)
        with strategy.scope():
            net = model.get_model(num_classes=2, depth=2, base_filters=4)
            net.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses.get_loss("bce_dice"))
        history = net.fit(dataset, steps_per_epoch=15, epochs=2, verbose=0)
        results[name] = {
            "replicas": strategy.num_replicas_in_sync,
            "loss": [float(v) for v in history.history["loss"]],
        }
    print("RESULT" + json.dumps(results))
    """
)


@pytest.mark.slow
def test_mirrored_training_on_two_logical_cpus_trains_like_one_device():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=config.PROJECT_ROOT / "tests",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    results = json.loads(line.removeprefix("RESULT"))
    assert results["default"]["replicas"] == 1 and results["mirrored"]["replicas"] == 2
    for name, run in results.items():
        first, last = run["loss"]
        assert np.isfinite(last) and last < first, (name, run)
    # The same data, seed and global batch: the two runs end at a similar loss.
    ratio = results["mirrored"]["loss"][-1] / results["default"]["loss"][-1]
    assert 0.67 < ratio < 1.5, results


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_computes_in_16_bits_and_outputs_float32(policy):
    try:
        training.set_precision(policy)
        net = model.get_model(num_classes=2, depth=2, base_filters=4)
        compute = {layer.compute_dtype for layer in net.layers if "conv" in layer.name}
        assert compute == {policy.removeprefix("mixed_")}
        assert all(weight.dtype == "float32" for weight in net.weights)
        output = net(np.zeros((1, 16, 16, 3), np.float32))
        assert keras.backend.standardize_dtype(output.dtype) == "float32"
        net.compile(optimizer="adam", loss="binary_crossentropy")
        history = net.fit(np.zeros((2, 16, 16, 3)), np.zeros((2, 16, 16, 2)), verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        training.set_precision("float32")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_unknown_strategy_or_precision_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="unknown distribution strategy"):
        training.get_strategy("tpu-pod")
    with pytest.raises(ValueError, match="unknown precision"):
        training.set_precision("float8")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        training.get_strategy("multi_worker")


def test_auto_precision_picks_bfloat16_without_xla_only_where_the_cpu_has_units(tmp_path):
    auto = training.TrainingConfig()
    assert auto.precision == "auto"
    assert training.resolve_speed(auto, bfloat16_units=True) == ("mixed_bfloat16", False)
    assert training.resolve_speed(auto, bfloat16_units=False) == ("float32", True)
    no_xla = replace(auto, jit_compile=False)
    assert training.resolve_speed(no_xla, bfloat16_units=False) == ("float32", False)
    # A precision given by name is taken as it is, units or not.
    chosen = replace(auto, precision="float32")
    assert training.resolve_speed(chosen, bfloat16_units=True) == ("float32", True)
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    older = tmp_path / "older"
    older.write_text("flags\t\t: fpu sse avx2 fma\n")
    assert training.has_bfloat16_units(amx)
    assert not training.has_bfloat16_units(older)
    assert not training.has_bfloat16_units(tmp_path / "missing")


def test_a_model_trained_in_bfloat16_is_saved_computing_in_float32():
    config = training.TrainingConfig(depth=2, base_filters=4, crop_size=16, jit_compile=False)
    try:
        training.set_precision("mixed_bfloat16")
        net = training.build_model(replace(config, precision="mixed_bfloat16"))
        assert {layer.compute_dtype for layer in net.layers if "conv" in layer.name} == {"bfloat16"}
        net.optimizer.learning_rate.assign(0.0002)
        copy = training.float32_copy(net, config)
    finally:
        training.set_precision("float32")
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    assert float(copy.optimizer.learning_rate.numpy()) == pytest.approx(0.0002)
    for original, copied in zip(net.weights, copy.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copied))
    image = np.random.default_rng(0).random((1, 32, 32, 1)).astype(np.float32)
    # The same network: outputs differ by bfloat16's rounding only.
    np.testing.assert_allclose(copy(image), net(image), atol=0.05)
