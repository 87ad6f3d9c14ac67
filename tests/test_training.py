"""Training helpers: the time limit, atomic model saving and the run record."""

import keras
import numpy as np
import pytest

from unet_tf import model, training


def test_time_limit_stops_training_and_says_so():
    net = model.get_model(depth=1, base_filters=2)
    net.compile(optimizer="adam", loss="binary_crossentropy")
    limit = training.TimeLimit(minutes=1e-6)
    images = np.zeros((2, 8, 8, 3), np.float32)
    history = net.fit(images, images[..., :1], epochs=5, verbose=0, callbacks=[limit])
    assert len(history.history["loss"]) == 1
    assert limit.stopped_by_time
    with pytest.raises(ValueError, match="positive"):
        training.TimeLimit(0)


def test_save_model_is_atomic_and_loadable(tmp_path):
    net = model.get_model(depth=1, base_filters=2)
    path = training.save_model(net, tmp_path / "m.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    image = np.random.default_rng(0).random((1, 8, 8, 3)).astype(np.float32)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(loaded.predict(image, verbose=0), net.predict(image, verbose=0))
    with pytest.raises(ValueError, match=r"must end in \.keras"):
        training.save_model(net, tmp_path / "m.h5")


def test_run_record_round_trip(tmp_path):
    training.write_run_record(tmp_path / "r.json", {"epochs": 3}, epochs_trained=2)
    record = training.read_run_record(tmp_path / "r.json")
    assert record["parameters"] == {"epochs": 3} and record["epochs_trained"] == 2
    assert record["environment"]["tensorflow"]
    with pytest.raises(FileNotFoundError, match="02-training"):
        training.read_run_record(tmp_path / "missing.json")
