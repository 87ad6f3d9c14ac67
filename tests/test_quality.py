"""The quality estimate: known features on discs, clean images trusted above degraded ones,
and ``predict`` writing the columns, naming the unreliable images and marking their overlays."""

import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import disc, disc_labels
from PIL import Image

from unet_tf import plots, quality
from unet_tf.__main__ import main as cli

SHAPE = (96, 96)


def disc_sample(rng, kind: str, name: str):
    """An image of 4 to 9 discs on a grid with its labels: ``clean`` (bright on dark),
    ``noisy`` (under heavy noise) or ``faint`` (barely brighter than the background)."""
    count = int(rng.integers(4, 10))
    cells = rng.permutation(9)[:count]
    discs = [
        (
            (16 + 32 * (c // 3) + int(rng.integers(-3, 4)), 16 + 32 * (c % 3)),
            int(rng.integers(6, 11)),
        )
        for c in cells
    ]
    truth = disc_labels(SHAPE, discs)
    foreground = (truth > 0).astype(np.float32)
    if kind == "clean":
        gray = 0.1 + 0.8 * foreground + rng.normal(0, 0.02, SHAPE)
    elif kind == "noisy":
        gray = 0.1 + 0.8 * foreground + rng.normal(0, 0.45, SHAPE)
    else:
        gray = 0.44 + 0.12 * foreground + rng.normal(0, 0.08, SHAPE)
    image = np.repeat(np.clip(gray, 0, 1)[..., None], 3, -1).astype(np.float32)
    return name, image, truth


def samples(seed: int, count: int):
    rng = np.random.default_rng(seed)
    return {
        kind: [disc_sample(rng, kind, f"{kind}{seed}-{i}") for i in range(count)]
        for kind in ("clean", "noisy", "faint")
    }


@pytest.fixture(scope="module")
def disc_net(disc_model_path):
    from unet_tf import trained

    net, settings, _ = trained.load_model_and_settings(disc_model_path)
    return net, settings


@pytest.fixture(scope="module")
def fitted(disc_net):
    net, settings = disc_net
    every = [sample for group in samples(0, 6).values() for sample in group]
    nuclei, images = quality.collect(net, every, settings)
    return quality.fit(nuclei, images, threshold=0.5)


def test_nucleus_features_of_known_discs():
    labels = disc_labels(SHAPE, [((30, 30), 8), ((60, 60), 10), ((5, 50), 6)])
    probability = np.where(labels > 0, 0.9, 0.0).astype(np.float32)
    probability[labels == 2] = 0.4  # A nucleus the network is unsure of.
    spread = np.full(SHAPE, 0.05, np.float32)
    table = quality.nucleus_features(labels, probability, spread)
    assert list(table.label) == [1, 2, 3]
    np.testing.assert_allclose(table.mean_probability, [0.9, 0.4, 0.9], rtol=1e-6)
    np.testing.assert_allclose(table.low_share, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(table.edge_probability, 0.0)  # Nothing around them.
    np.testing.assert_allclose(table.spread, 0.05, rtol=1e-6)
    areas = np.array([disc(SHAPE, c, r).sum() for c, r in [((30, 30), 8), ((60, 60), 10)]])
    third = (labels == 3).sum()
    np.testing.assert_allclose(
        table.log_relative_area, np.log([*areas, third] / np.median([*areas, third]))
    )
    assert list(table.at_edge) == [0.0, 0.0, 1.0]
    assert quality.nucleus_features(labels, probability).spread.isna().all()


def test_clean_discs_are_trusted_above_noisy_and_faint_ones(disc_net, fitted):
    net, settings = disc_net
    for tta in (True, False):
        chosen = {**settings, "tta": tta}
        confidence, expected = {}, {}
        for kind, group in samples(1, 4).items():
            nuclei, images = quality.collect(net, group, chosen)
            rows = nuclei[nuclei.tta == tta]
            confidence[kind] = fitted.confidence(rows, tta)
            expected[kind] = [
                fitted.expected_dsb(
                    quality.with_confidence(
                        row, fitted.confidence(rows[rows.image == row["image"]], tta)
                    ),
                    tta,
                )
                for row in images[images.tta == tta].to_dict("records")
            ]
            assert ((confidence[kind] >= 0) & (confidence[kind] <= 1)).all()
            assert all(0 <= value <= 1 for value in expected[kind])
        for degraded in ("noisy", "faint"):
            assert confidence["clean"].mean() > confidence[degraded].mean() + 0.2, (tta, degraded)
            assert min(expected["clean"]) > max(expected[degraded]), (tta, degraded, expected)


def test_a_quality_estimate_survives_saving_and_a_bad_file_is_named(fitted, tmp_path):
    path = tmp_path / "unet.quality.json"
    fitted.save(path)
    assert quality.QualityModel.load(path) == fitted
    path.write_text('{"nucleus": 1}')
    with pytest.raises(ValueError, match=r"unet\.quality\.json: not a quality estimate"):
        quality.QualityModel.load(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.quality\.json"):
        quality.QualityModel.load(tmp_path / "missing.quality.json")


@pytest.fixture
def images_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for kind in ("clean", "noisy"):
        _, image, _ = disc_sample(rng, kind, kind)
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(folder / f"{kind}.png")
    return folder


def test_predict_writes_confidence_expected_score_and_names_the_unreliable(
    disc_model_path, fitted, images_folder, tmp_path, capsys
):
    model = tmp_path / "model" / "discs.keras"
    shutil.copytree(disc_model_path.parent, model.parent)
    fitted.save(quality.quality_path(model))
    output = tmp_path / "out"
    assert (
        cli(["predict", "--model", str(model), "--quiet", str(images_folder), "-o", str(output)])
        == 0
    )
    nuclei = pd.read_csv(output / "nuclei.csv")
    summary = pd.read_csv(output / "summary.csv").set_index("image")
    assert nuclei.confidence.between(0, 1).all()
    assert summary.expected_dsb.between(0, 1).all()
    assert summary.loc["clean.png", "expected_dsb"] > summary.loc["noisy.png", "expected_dsb"]
    assert bool(summary.loc["clean.png", "reliable"]) and not bool(
        summary.loc["noisy.png", "reliable"]
    )
    line = [line for line in capsys.readouterr().out.splitlines() if "unreliable" in line]
    assert line == [
        "1 of 2 images look unreliable (expected DSB below the threshold; check them by eye): "
        "noisy.png"
    ]
    orange = np.array(plots.UNRELIABLE_COLOUR)
    for name, framed in (("noisy", True), ("clean", False)):
        overlay = np.asarray(Image.open(output / f"{name}_overlay.png"))
        assert (overlay[-1, :] == orange).all(-1).all() == framed


def test_a_model_without_an_estimate_predicts_and_says_the_columns_are_missing(
    disc_model_path, images_folder, tmp_path, capsys
):
    output = tmp_path / "out"
    assert (
        cli(
            [
                "predict",
                "--model",
                str(disc_model_path),
                "--quiet",
                str(images_folder),
                "-o",
                str(output),
            ]
        )
        == 0
    )
    assert (
        "discs.quality.json not found, so no confidence, expected_dsb or reliable"
        in capsys.readouterr().err
    )
    assert "confidence" not in pd.read_csv(output / "nuclei.csv")
    assert "expected_dsb" not in pd.read_csv(output / "summary.csv")
