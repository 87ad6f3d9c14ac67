"""``python -m unet_tf export``: every format is written, loads back and agrees with Keras."""

import json

import keras
import numpy as np
import pytest

from unet_tf import export, inference, model
from unet_tf.__main__ import main as cli


@pytest.fixture(scope="module")
def net():
    keras.utils.set_random_seed(3)
    return model.get_model(num_classes=2, depth=2, base_filters=4)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.random((32, 32, 3)).astype(np.float32) for _ in range(4)]


@pytest.fixture(scope="module")
def exported(net, images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    return export.export_model(net, folder, export.FORMATS, representative=images, stem="tiny")


def test_latency_is_the_median_call_after_a_warm_up(monkeypatch):
    # A clock that only the model moves: the warm-up takes 100 ms, the timed calls 5, 6,
    # 7, 1 and 2 ms, so the median is 5 ms whatever the machine (timing the warm-up too
    # gives 6 ms, the mean 4.2 ms).
    now = [0.0]
    durations = iter([0.100, 0.005, 0.006, 0.007, 0.001, 0.002])

    class Model:
        def predict_on_batch(self, batch):
            now[0] += next(durations)

    monkeypatch.setattr(export.time, "perf_counter", lambda: now[0])
    assert export.latency_ms(Model(), np.zeros((1, 8, 8, 3))) == pytest.approx(5.0)
    assert next(durations, None) is None  # one warm-up and five timed calls, no more


@pytest.mark.slow
def test_every_format_is_written_and_within_tolerance(net, images, exported):
    assert set(exported) == set(export.FORMATS)
    assert exported["saved_model"].is_dir() and exported["onnx"].suffix == ".onnx"
    rows = export.check_exports(net, exported, images)
    for row in rows:
        assert row["within_tolerance"], row
        assert row["size_mb"] > 0 and np.isfinite(row["latency_ms"])
    by_format = {row["format"]: row for row in rows}
    for fmt in ("keras", "saved_model", "tflite_float32", "onnx"):
        assert by_format[fmt]["max_abs_difference"] <= 1e-4
    # Quantization shrinks the file; float16 halves the weights.
    assert by_format["tflite_float16"]["size_mb"] < by_format["tflite_float32"]["size_mb"]
    assert by_format["tflite_int8"]["size_mb"] < by_format["tflite_float16"]["size_mb"]
    table = export.format_table(rows).splitlines()
    assert table[1] == "|---|---|---|---|---|---|---|" and "| saved_model |" in table[3]


@pytest.mark.parametrize("fmt", ["saved_model", "tflite_float32", "onnx"])
def test_exports_serve_tiled_full_resolution_inference(net, exported, fmt):
    image = np.random.default_rng(5).random((70, 90, 3)).astype(np.float32)
    reference = inference.predict_full(net, image, tile_size=32, overlap=4)
    served = inference.predict_full(
        export.load_exported(fmt, exported[fmt], depth=2), image, tile_size=32, overlap=4
    )
    np.testing.assert_allclose(served, reference, atol=1e-4)


def test_compare_flags_an_export_that_disagrees():
    reference = np.zeros((4, 4))
    assert export.compare(reference, reference + 5e-5, "onnx")["within_tolerance"]
    assert not export.compare(reference, reference + 1e-3, "onnx")["within_tolerance"]
    assert export.compare(reference, reference + 0.01, "tflite_int8")["within_tolerance"]


def test_existing_exports_are_not_overwritten(net, images, exported):
    folder = exported["onnx"].parent
    before = exported["onnx"].read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_model(net, folder, ["onnx"], stem="tiny")
    assert exported["onnx"].read_bytes() == before
    export.export_model(net, folder, ["onnx"], stem="tiny", overwrite=True)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_int8_needs_calibration_images(net, tmp_path):
    with pytest.raises(ValueError, match="representative"):
        export.export_model(net, tmp_path, ["tflite_int8"])


def test_command_line_errors(tmp_path, capsys):
    assert cli(["export", "--model", str(tmp_path / "none.keras")]) == 2
    assert "make report" in capsys.readouterr().err
    assert cli(["export", "--formats", "pdf"]) == 2
    assert "unknown formats" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_writes_the_report(net, tmp_path, monkeypatch, images, capsys):
    path = tmp_path / "tiny.keras"
    net.save(path)
    # The command calibrates on training crops; synthetic ones stand in for the data here.
    monkeypatch.setattr(export, "calibration_crops", lambda **kwargs: images)
    status = cli(
        [
            "export",
            "--model",
            str(path),
            "-o",
            str(tmp_path / "out"),
            "--formats",
            "tflite_float16,onnx",
            "--dsb-images",
            "-1",
        ]
    )
    assert status == 0
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert [row["format"] for row in report["checks"]] == ["tflite_float16", "onnx"]
    assert "| onnx |" in capsys.readouterr().out
