"""Training helpers: the time limit, atomic model saving and the run record."""

import os

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


def tiny_compiled_model():
    keras.utils.set_random_seed(7)
    net = model.get_model(depth=1, base_filters=2)
    net.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    return net


def tiny_data():
    rng = np.random.default_rng(0)
    images = rng.random((4, 8, 8, 3)).astype(np.float32)
    return images, (images[..., :1] > 0.5).astype(np.float32)


@pytest.mark.slow
def test_a_resumed_run_continues_exactly_where_the_checkpoint_left_off(tmp_path):
    images, targets = tiny_data()
    straight = tiny_compiled_model()
    straight.fit(images, targets, epochs=3, batch_size=2, shuffle=False, verbose=0)

    first = tiny_compiled_model()
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=5)
    checkpoint = training.EpochCheckpoint(tmp_path / "resume", [stopper], metadata={"seed": 7})
    callbacks = [stopper, checkpoint]
    first.fit(
        images, targets, epochs=2, batch_size=2, shuffle=False, verbose=0, callbacks=callbacks
    )

    state = training.latest_checkpoint(tmp_path / "resume")
    assert state["epochs_completed"] == 2 and state["seed"] == 7
    assert len(state["history"]["loss"]) == 2
    assert state["callbacks"]["EarlyStopping"]["best"] == min(state["history"]["loss"])
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == ["epoch-0002", "latest"]
    # The checkpoint folder gets the permissions of any new folder, not mkdtemp's private ones.
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "resume" / "epoch-0002").stat().st_mode & 0o777 == 0o777 & ~umask

    resumed = tiny_compiled_model()  # Fresh weights, as after a crash.
    training.restore_checkpoint(resumed, tmp_path / "resume", state)
    stopper = keras.callbacks.EarlyStopping(monitor="loss", patience=5)
    checkpoint = training.EpochCheckpoint(tmp_path / "resume", [stopper], state=state)
    resumed.fit(
        images,
        targets,
        epochs=3,
        initial_epoch=2,
        batch_size=2,
        shuffle=False,
        verbose=0,
        callbacks=[stopper, checkpoint],
    )
    assert int(resumed.optimizer.iterations.numpy()) == int(straight.optimizer.iterations.numpy())
    for got, expected in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert len(checkpoint.history["loss"]) == 3
    assert training.latest_checkpoint(tmp_path / "resume")["epochs_completed"] == 3


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path):
    images, targets = tiny_data()
    net = tiny_compiled_model()
    checkpoint = training.EpochCheckpoint(tmp_path / "resume")
    net.fit(images, targets, epochs=1, verbose=0, callbacks=[checkpoint])
    state = training.latest_checkpoint(tmp_path / "resume")
    other = model.get_model(depth=2, base_filters=2)
    other.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(ValueError, match="does not fit this model"):
        training.restore_checkpoint(other, tmp_path / "resume", state)
    assert training.latest_checkpoint(tmp_path / "nothing") is None


def test_a_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    images, targets = tiny_data()
    net = tiny_compiled_model()
    checkpoint = training.EpochCheckpoint(tmp_path / "resume")
    net.fit(images, targets, epochs=1, verbose=0, callbacks=[checkpoint])
    poisoned = images.copy()
    poisoned[0, 0, 0, 0] = np.nan
    net.fit(
        poisoned,
        targets,
        epochs=3,
        initial_epoch=1,
        verbose=0,
        callbacks=[keras.callbacks.TerminateOnNaN(), checkpoint],
    )
    assert checkpoint.diverged == 2
    assert training.latest_checkpoint(tmp_path / "resume")["epochs_completed"] == 1


def test_changed_parameters_allow_a_longer_budget_only():
    old = {"epochs": 10, "max_minutes": 5.0, "learning_rate": 0.001}
    assert training.changed_parameters(old, {**old, "epochs": 20, "max_minutes": 9.0}) == {}
    assert training.changed_parameters(old, {**old, "learning_rate": 0.01}) == {
        "learning_rate": (0.001, 0.01)
    }


def test_best_model_checkpoint_saves_only_improvements_atomically(tmp_path, monkeypatch):
    images, targets = tiny_data()
    net = tiny_compiled_model()
    path = tmp_path / "best.keras"
    best = training.BestModelCheckpoint(path, monitor="loss")
    net.fit(images, targets, epochs=3, verbose=0, callbacks=[best])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]
    assert best.best is not None
    saved = keras.models.load_model(path, compile=False)
    assert saved.count_params() == net.count_params()

    # Epoch by epoch with chosen values: only an improvement rewrites the file. Every save
    # renames a new file into place, so a rewrite shows as a new inode.
    saves = []
    save_model = training.save_model
    monkeypatch.setattr(training, "save_model", lambda *a: saves.append(a) or save_model(*a))

    def epoch(loss):
        best.on_epoch_end(0, {"loss": loss})
        return path.stat().st_ino, path.stat().st_mtime_ns

    lower = best.best / 2
    improved = epoch(lower)
    assert len(saves) == 1 and best.best == lower
    for worse in (lower * 2, lower, float("nan"), None):
        assert epoch(worse) == improved, worse
        assert len(saves) == 1 and best.best == lower, worse
    assert epoch(lower / 2) != improved and len(saves) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]


class _WeightsPerEpoch(keras.callbacks.Callback):
    """Records the weights at the end of every epoch (put it before the averager)."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


@pytest.mark.slow
def test_weight_average_is_the_mean_of_the_tail_epochs_and_survives_a_resume(tmp_path):
    images, targets = tiny_data()
    fit = {"batch_size": 2, "shuffle": False, "verbose": 0}
    # A budget of 4 epochs (and minutes enough): the last half is epochs 2 to 4.
    recorder = _WeightsPerEpoch()
    straight = tiny_compiled_model()
    average = training.WeightAverage(0.5, minutes=1e6, epochs=4)
    straight.fit(images, targets, epochs=4, callbacks=[recorder, average], **fit)
    assert average.count == 3
    last = straight.get_weights()
    assert average.apply() == 3
    for index, got in enumerate(straight.get_weights()):
        expected = np.mean([epoch[index] for epoch in recorder.weights[1:]], axis=0)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(straight.get_weights(), last, strict=True))

    # Interrupted after epoch 3 and resumed, the average holds the same epochs.
    first = tiny_compiled_model()
    average = training.WeightAverage(0.5, minutes=1e6, epochs=4)
    checkpoint = training.EpochCheckpoint(tmp_path / "resume", [average])
    first.fit(images, targets, epochs=3, callbacks=[average, checkpoint], **fit)
    state = training.latest_checkpoint(tmp_path / "resume")
    assert state["callbacks"]["WeightAverage"] == {"count": 2}
    resumed = tiny_compiled_model()
    training.restore_checkpoint(resumed, tmp_path / "resume", state)
    average = training.WeightAverage(0.5, minutes=1e6, epochs=4)
    checkpoint = training.EpochCheckpoint(tmp_path / "resume", [average], state=state)
    resumed.fit(images, targets, epochs=4, initial_epoch=3, callbacks=[average, checkpoint], **fit)
    assert average.apply() == 3
    for got, expected in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_weight_average_of_one_epoch_leaves_the_model_alone():
    images, targets = tiny_data()
    net = tiny_compiled_model()
    # Of a budget of 4 epochs the last fifth holds only the fourth.
    average = training.WeightAverage(0.2, minutes=1e6, epochs=4)
    net.fit(images, targets, epochs=4, batch_size=2, verbose=0, callbacks=[average])
    before = net.get_weights()
    assert average.count == 1 and average.apply() == 0
    for got, expected in zip(net.get_weights(), before, strict=True):
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="tail"):
        training.WeightAverage(0.0, minutes=10, epochs=4)
