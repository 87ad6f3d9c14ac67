"""``python -m unet_tf predict``: labels, measurements, skips and exit status on known discs."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import disc, disc_labels
from PIL import Image
from skimage.segmentation import find_boundaries

from unet_tf import inference, measure, plots, predict, trained
from unet_tf.__main__ import main as cli

DISCS_8BIT = [((20, 20), 8), ((20, 60), 10), ((70, 40), 12)]
DISCS_16BIT = [((15, 15), 6), ((15, 70), 7), ((60, 20), 9), ((65, 70), 11)]
SHAPE = (100, 90)


@pytest.fixture
def model_path(disc_model_path):
    return disc_model_path


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.repeat((disc_labels(SHAPE, DISCS_8BIT) > 0)[..., None], 3, -1).astype(np.uint8) * 255
    Image.fromarray(rgb).save(folder / "cells.png")
    # A 16-bit TIFF that uses 12 bits, as microscope cameras write them.
    gray = (disc_labels(SHAPE, DISCS_16BIT) > 0).astype(np.uint16) * 4000
    tifffile.imwrite(folder / "camera.tif", gray)
    (folder / "broken.png").write_text("this is not a PNG")
    (folder / "notes.txt").write_text("not an image suffix, so not picked up from a folder")
    return folder


def run(model_path, *arguments):
    return cli(["predict", "--model", str(model_path), "--quiet", *arguments])


def test_predict_segments_measures_and_reports_the_skipped_file(
    model_path, inputs, tmp_path, capsys
):
    output = tmp_path / "out"
    status = run(model_path, str(inputs), "-o", str(output), "--pixel-size", "0.5")
    assert status == 1  # One file was skipped.
    stderr = capsys.readouterr().err
    assert "broken.png" in stderr and "cannot read" in stderr
    assert "1 of 3 images skipped" in stderr

    for name, discs in (("cells", DISCS_8BIT), ("camera", DISCS_16BIT)):
        labels = tifffile.imread(output / f"{name}_labels.tif")
        assert labels.dtype == np.uint16 and labels.shape == SHAPE
        assert labels.max() == len(discs)
        # Every disc is one nucleus, pixel for pixel.
        found = sorted(int((labels == value).sum()) for value in range(1, len(discs) + 1))
        assert found == sorted(int(disc(SHAPE, c, r).sum()) for c, r in discs)
        overlay = np.asarray(Image.open(output / f"{name}_overlay.png"))
        assert overlay.shape == (*SHAPE, 3) and overlay.dtype == np.uint8
        # The outlines are the notebooks' prediction colour, on the nuclei's edge pixels.
        edges = find_boundaries(labels, mode="inner")
        magenta = np.round(np.multiply(plots.PREDICTION_COLOUR, 255))
        assert (overlay[edges] == magenta).all() and not (overlay[~edges] == magenta).all(-1).any()
    assert not (output / "broken_labels.tif").exists()

    nuclei = pd.read_csv(output / "nuclei.csv")
    assert list(nuclei.columns) == measure.NUCLEUS_COLUMNS + measure.MICROMETRE_COLUMNS
    assert nuclei.groupby("image").size().to_dict() == {"camera.tif": 4, "cells.png": 3}
    np.testing.assert_allclose(nuclei.area_um2, nuclei.area * 0.25)
    camera = nuclei[nuclei.image == "camera.tif"]
    np.testing.assert_allclose(camera.mean_intensity, 4000.0)  # Raw 16-bit values.
    radius = np.sqrt(camera.area / np.pi)
    np.testing.assert_allclose(camera.equivalent_diameter, 2 * radius, rtol=1e-5)

    summary = pd.read_csv(output / "summary.csv").set_index("image")
    assert summary.loc["cells.png", "nuclei"] == 3
    assert summary.loc["camera.tif", "nuclei"] == 4
    assert summary.loc["cells.png", "coverage"] == pytest.approx(
        (disc_labels(SHAPE, DISCS_8BIT) > 0).mean(), rel=1e-5
    )


def test_existing_outputs_are_kept_unless_overwrite(model_path, inputs, tmp_path, capsys):
    output = tmp_path / "out"
    (inputs / "broken.png").unlink()
    assert run(model_path, str(inputs), "-o", str(output)) == 0
    first = (output / "nuclei.csv").read_bytes()
    (output / "nuclei.csv").write_text("edited by the user")
    assert run(model_path, str(inputs), "-o", str(output)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (output / "nuclei.csv").read_text() == "edited by the user"
    assert run(model_path, str(inputs), "-o", str(output), "--overwrite") == 0
    assert (output / "nuclei.csv").read_bytes() == first


def test_png_labels_and_single_files(model_path, inputs, tmp_path):
    output = tmp_path / "out"
    status = run(model_path, str(inputs / "cells.png"), "-o", str(output), "--format", "png")
    assert status == 0
    labels = np.asarray(Image.open(output / "cells_labels.png"))
    assert labels.max() == len(DISCS_8BIT)
    # The hidden record lets a stopped run continue (--resume).
    assert sorted(p.name for p in output.iterdir()) == [
        ".unet-tf-predict",
        "cells_labels.png",
        "cells_overlay.png",
        "nuclei.csv",
        "summary.csv",
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["missing-folder", "-o", "out"], "no such file or folder"),
        (["{inputs}", "-o", "out", "--pixel-size", "-1"], "--pixel-size must be positive"),
        (["{inputs}", "-o", "out", "--model", "nowhere.keras"], "train one with `make report`"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    model_path, inputs, tmp_path, capsys, arguments, message
):
    arguments = [a.replace("{inputs}", str(inputs)) for a in arguments]
    arguments = [str(tmp_path / a) if a in ("out", "missing-folder") else a for a in arguments]
    assert run(model_path, *arguments) == 2
    assert message in capsys.readouterr().err


def test_inputs_with_the_same_name_get_distinct_outputs(tmp_path):
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "x.tif"]
    names = predict.output_names(paths)
    labels = [names[p]["labels"] for p in paths]
    assert len(set(labels)) == 3 and labels[0] == "x_labels.tif"


def test_untuned_models_fall_back_and_say_so(model_path, tmp_path):
    copy = tmp_path / "copy.keras"
    copy.write_bytes(model_path.read_bytes())
    _, settings, tuned = trained.load_model_and_settings(copy)
    assert not tuned and settings["postprocess"]["method"] == "components"


@pytest.mark.parametrize("channels, method", [(2, "watershed_border"), (3, "watershed_center")])
def test_untuned_models_fall_back_to_the_watershed_on_their_own_channel(tmp_path, channels, method):
    import keras
    from keras import layers

    inputs = keras.Input((None, None, 1))
    path = tmp_path / f"untuned{channels}.keras"
    keras.Model(inputs, layers.Conv2D(channels, 1, activation="sigmoid")(inputs)).save(path)
    net, settings, tuned = trained.load_model_and_settings(path)
    assert not tuned and settings["postprocess"]["method"] == method
    image = np.zeros((32, 32, 3), np.float32)
    image[8:20, 8:20] = 0.8
    assert inference.segment(net, image, settings).shape == (32, 32)


def test_a_tile_size_the_model_cannot_take_is_refused(model_path, inputs, tmp_path, capsys):
    bad = run(model_path, str(inputs), "-o", str(tmp_path / "o"), "--tile-size", "-8")
    assert bad == 2 and "tile size" in capsys.readouterr().err


def model_with_settings(model_path, tmp_path, postprocess, tta, **extra):
    """A copy of the disc model with other tuned settings beside it."""
    copy = tmp_path / "tuned" / "discs.keras"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(model_path.read_bytes())
    inference.write_settings(copy, postprocess, tta=tta, tile_size=64, **extra)
    return copy


# Two discs that overlap (centres 16 apart, radii 10): one blob, two nuclei.
TOUCHING = [((40, 30), 10), ((40, 46), 10)]


def touching_image(tmp_path):
    folder = tmp_path / "touching"
    folder.mkdir()
    mask = (disc_labels(SHAPE, TOUCHING) > 0).astype(np.uint8) * 255
    Image.fromarray(np.repeat(mask[..., None], 3, -1)).save(folder / "pair.png")
    return folder


@pytest.mark.parametrize("tta", [True, False])
def test_the_tuned_watershed_splits_touching_nuclei_with_and_without_tta(model_path, tmp_path, tta):
    watershed = {"method": "watershed_distance", "threshold": 0.5, "min_distance": 2.0}
    tuned = model_with_settings(model_path, tmp_path, {**watershed, "min_area": 5}, tta=tta)
    folder = touching_image(tmp_path)
    assert run(tuned, str(folder), "-o", str(tmp_path / "out")) == 0
    labels = tifffile.imread(tmp_path / "out" / "pair_labels.tif")
    # Connected components would give one object; the watershed cuts it in two halves
    # along the line where the discs meet (the model is pixel-wise, so the 8 views agree).
    assert labels.max() == 2
    assert set(np.unique(labels[40, 22:30])) == {1} and set(np.unique(labels[40, 48:55])) == {2}
    halves = sorted(int((labels == value).sum()) for value in (1, 2))
    assert halves[0] > 0.4 * (labels > 0).sum()
    np.testing.assert_array_equal(labels > 0, disc_labels(SHAPE, TOUCHING) > 0)
    if tta:
        # TTA averages the 8 views of the same pixel-wise output: the same labels as without.
        assert run(tuned, str(folder), "-o", str(tmp_path / "plain"), "--no-tta") == 0
        plain = tifffile.imread(tmp_path / "plain" / "pair_labels.tif")
        np.testing.assert_array_equal(labels, plain)


def test_a_given_nucleus_diameter_rescales_the_image_and_labels_come_back_at_its_size(
    model_path, inputs, tmp_path
):
    components = {"method": "components", "threshold": 0.5, "min_area": 5}
    sized = model_with_settings(
        model_path, tmp_path, components, tta=False, rescale=True, nucleus_diameter=20.0
    )
    image = inputs / "cells.png"
    output = tmp_path / "out"
    assert run(sized, str(image), "-o", str(output), "--nucleus-diameter", "10") == 0
    # Nuclei of 10 pixels for a model trained on 20: the image went through at twice its size.
    assert pd.read_csv(output / "summary.csv").scale.tolist() == [2.0]
    labels = tifffile.imread(output / "cells_labels.tif")
    assert labels.shape == SHAPE and labels.max() == len(DISCS_8BIT)
    # Resampled there and back: every disc within a ring of one pixel of its true area.
    found = sorted(int((labels == value).sum()) for value in range(1, len(DISCS_8BIT) + 1))
    true = sorted(int(disc(SHAPE, c, r).sum()) for c, r in DISCS_8BIT)
    for got, want in zip(found, true, strict=True):
        assert abs(got - want) <= 2 * np.pi * np.sqrt(want / np.pi)


@pytest.mark.parametrize(
    "arguments, settings, message",
    [
        (["--nucleus-diameter", "0"], {"nucleus_diameter": 20.0}, "must be positive"),
        (["--nucleus-diameter", "-3"], {"nucleus_diameter": 20.0}, "must be positive"),
        (
            ["--nucleus-diameter", "10", "--no-rescale"],
            {"nucleus_diameter": 20.0},
            "not given with --no-rescale",
        ),
        (["--nucleus-diameter", "10"], {}, "needs a model that records the nucleus size"),
    ],
)
def test_bad_nucleus_diameters_exit_2_naming_the_problem(
    model_path, inputs, tmp_path, capsys, arguments, settings, message
):
    components = {"method": "components", "threshold": 0.5, "min_area": 5}
    sized = model_with_settings(model_path, tmp_path, components, tta=False, **settings)
    output = tmp_path / "out"
    assert run(sized, str(inputs / "cells.png"), "-o", str(output), *arguments) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not output.exists() or not any(output.iterdir())


def test_recursive_finds_images_in_subfolders_and_plain_does_not(model_path, inputs, tmp_path):
    (inputs / "broken.png").unlink()
    nested = inputs / "plate2" / "well"
    nested.mkdir(parents=True)
    (nested / "deep.png").write_bytes((inputs / "cells.png").read_bytes())
    flat, deep = tmp_path / "flat", tmp_path / "deep"
    assert run(model_path, str(inputs), "-o", str(flat)) == 0
    assert run(model_path, str(inputs), "-o", str(deep), "--recursive") == 0
    assert set(pd.read_csv(flat / "summary.csv").image) == {"cells.png", "camera.tif"}
    images = pd.read_csv(deep / "summary.csv").set_index("image")
    assert len(images) == 3 and images.nuclei.sum() == 3 + 4 + 3
    assert any((deep).rglob("deep_labels.tif"))
