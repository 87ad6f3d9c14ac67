"""bioimage.io model packages: valid for ``bioimageio.spec``, runnable by ``bioimageio.core``."""

import json

import keras
import numpy as np
import pytest
import yaml

from unet_tf import appearance, inference, model, modelzoo, training
from unet_tf.__main__ import main as cli


def _save_tiny(folder, input_channels: int, data_path: str = "/somewhere/local/stage1_train"):
    keras.utils.set_random_seed(5)
    net = model.get_model(input_channels=input_channels, num_classes=2, depth=2, base_filters=4)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.keras"
    net.save(path)
    representation = "nuclei_bright" if input_channels == 1 else "rgb"
    training.write_run_record(
        path.with_suffix(".json"),
        {"representation": representation, "target": "border", "depth": 2},
        nucleus_diameter=15.0,
        data=data_path,
    )
    inference.write_settings(
        path, {"method": "watershed_border"}, tta=False, tile_size=256, validation_dsb_score=0.5
    )
    return path


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny nuclei_bright model exported from the command line, as a user would."""
    root = tmp_path_factory.mktemp("zoo")
    path = _save_tiny(root / "model", input_channels=1)
    # An output folder whose parents do not exist yet, as models/export/<name> on a fresh clone.
    out = root / "export" / "tiny"
    status = cli(["export", "--model", str(path), "-o", str(out), "--format", "bioimageio"])
    return status, out


@pytest.mark.slow
def test_command_writes_a_valid_package_that_bioimageio_core_runs(package):
    status, out = package
    assert status == 0
    report = json.loads((out / "bioimageio.json").read_text())
    assert report["validation"] == "valid-format"
    assert report["status"] == "passed"
    names = " ".join(check["name"] for check in report["checks"])
    # Both weight formats reproduced the test output.
    assert "Reproduce test outputs from test inputs (onnx)" in names
    assert "Reproduce test outputs from test inputs (tensorflow_saved_model_bundle)" in names
    assert modelzoo.validate_package(out / "tiny.bioimageio.zip") == "valid-format"
    assert modelzoo.validate_package(out / "tiny.bioimageio") == "valid-format"


def test_package_describes_axes_normalisation_license_and_citations(package):
    _, out = package
    folder = out / "tiny.bioimageio"
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    assert rdf["format_version"].startswith("0.5")
    assert set(rdf["weights"]) == {"tensorflow_saved_model_bundle", "onnx"}
    (tensor,) = rdf["inputs"]
    space = [axis for axis in tensor["axes"] if axis["type"] == "space"]
    # Sides a multiple of 2**depth (depth 2 here).
    assert [axis["size"]["step"] for axis in space] == [4, 4]
    assert tensor["preprocessing"] == [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    (output,) = rdf["outputs"]
    assert output["axes"][-1]["channel_names"] == ["nucleus", "border"]
    assert all(axis["halo"] == modelzoo.HALO for axis in output["axes"] if axis["type"] == "space")
    assert rdf["license"] == "MIT"
    assert {entry["doi"] for entry in rdf["cite"]} == {
        "10.1007/978-3-319-24574-4_28",
        "10.1038/s41592-019-0612-7",
    }
    for name in ("cover.png", "README.md", "test_input.npy", "test_output.npy"):
        assert (folder / name).is_file()
    test_in = np.load(folder / "test_input.npy")
    test_out = np.load(folder / "test_output.npy")
    assert test_in.shape[-1] == 1 and test_out.shape == (*test_in.shape[:3], 2)
    # The training record travels without local paths.
    record = json.loads((folder / "training_record.json").read_text())
    assert record["data"] == "stage1_train"
    assert "/somewhere" not in (folder / "README.md").read_text()


def test_the_exported_normalisation_is_the_training_one():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:64, :64]
    discs = ((rows - 20) ** 2 + (cols - 30) ** 2 < 64) | ((rows - 45) ** 2 + (cols - 40) ** 2 < 81)
    fluorescence = np.where(discs, 0.7, 0.05) + rng.normal(0, 0.01, (64, 64))
    # Purple nuclei on a pale background, as in haematoxylin-stained tissue.
    stained = np.stack(
        [np.where(discs, 0.3, 0.9), np.where(discs, 0.2, 0.8), np.full((64, 64), 0.9)], -1
    )
    batch = np.stack([np.repeat(fluorescence[..., None], 3, -1), stained]).astype(np.float32)
    layer = modelzoo.NucleiBright()
    together = np.asarray(layer(batch))
    for index, image in enumerate(batch):
        np.testing.assert_allclose(
            together[index], appearance.nuclei_bright(image).numpy(), atol=1e-6
        )


def test_an_rgb_model_takes_rgb(tmp_path):
    path = _save_tiny(tmp_path / "model", input_channels=3)
    paths = modelzoo.export_package(path, tmp_path / "out")
    rdf = yaml.safe_load(paths["rdf"].read_text())
    assert rdf["inputs"][0]["axes"][-1]["channel_names"] == ["R", "G", "B"]
    assert modelzoo.validate_package(paths["zip"]) == "valid-format"


def test_errors_name_the_file(tmp_path, package, capsys):
    _, out = package
    path = _save_tiny(tmp_path / "model", input_channels=1)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"tiny\.json"):
        modelzoo.export_package(path, tmp_path / "out")
    # An existing package is kept unless --overwrite.
    existing = out.parent.parent / "model" / "tiny.keras"
    status = cli(["export", "--model", str(existing), "-o", str(out), "--format", "bioimageio"])
    assert status == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"no bioimage\.io package"):
        modelzoo.validate_package(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    rdf = yaml.safe_load((out / "tiny.bioimageio" / "rdf.yaml").read_text())
    del rdf["weights"]
    (broken / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ValueError, match=r"not a valid bioimage\.io package"):
        modelzoo.validate_package(broken)
    net = model.get_model(input_channels=1, num_classes=1, depth=2, base_filters=4)
    with pytest.raises(ValueError, match="multiple of 4"):
        modelzoo.test_input(net, size=130)
