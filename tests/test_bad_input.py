"""The bad-input matrix: every messy case gives its documented outcome, never a bare traceback.

Readers raise an error naming the file and the problem; ``predict`` reports such a file,
skips it, carries on and exits with status 1; degenerate but valid images (all black, 1x1,
very large, 16-bit, RGBA) are processed.
"""

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import disc, write_sample
from PIL import Image

from unet_tf import data, decoding, pipeline
from unet_tf.__main__ import main as cli
from unet_tf.predict import find_images


def png_bytes(tmp_path, array):
    path = tmp_path / "source.png"
    Image.fromarray(array).save(path)
    return path.read_bytes()


def unreadable(kind, tmp_path):
    """Bytes of an unreadable file of ``kind`` and the message its error must hold."""
    good = png_bytes(tmp_path, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    return {
        "zero-byte": (b"", r"empty \(0 bytes\)"),
        "truncated": (good[: len(good) // 3], "cannot read the image"),
        "text-named-png": (b"Hello, I am a text file.\n", "cannot read the image"),
    }[kind]


KINDS = ["zero-byte", "truncated", "text-named-png"]


@pytest.mark.parametrize("kind", KINDS)
def test_readers_name_the_unreadable_file(tmp_path, kind):
    content, message = unreadable(kind, tmp_path)
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        decoding.read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_sample_with_an_unreadable_image_or_mask_names_it(tmp_path, kind):
    content, message = unreadable(kind, tmp_path)
    image = np.zeros((16, 16), np.uint8)
    sample = write_sample(tmp_path / "train", "a", image, [disc((16, 16), (8, 8), 4)])
    (sample / "masks" / "m000.png").write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        data.load_samples(tmp_path / "train")
    assert "m000.png" in str(info.value)


def test_a_non_image_file_beside_the_image_is_ignored_or_named(tmp_path):
    sample = write_sample(tmp_path / "train", "a", np.zeros((8, 8), np.uint8), [])
    (sample / "images" / "notes.txt").write_text("acquired on Tuesday")
    # The Kaggle name <id>.png is found whatever else lies beside it.
    assert data.image_file(sample).name == "a.png"
    (sample / "images" / "a.png").rename(sample / "images" / "other.png")
    with pytest.raises(FileNotFoundError, match=r"expected one image file named a\.png"):
        data.image_file(sample)


def test_an_image_folder_without_masks_is_a_clear_error(tmp_path):
    write_sample(tmp_path / "train", "a", np.zeros((8, 8), np.uint8), masks=None)
    with pytest.raises(FileNotFoundError, match="no masks/ folder"):
        data.load_samples(tmp_path / "train")
    # Without labels (test images) the same folder is fine.
    assert data.load_samples(tmp_path / "train", with_labels=False)[0][0] == "a"


def test_a_mask_of_another_size_names_both_sizes(tmp_path):
    sample = write_sample(tmp_path / "train", "a", np.zeros((16, 16), np.uint8), [])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(sample / "masks" / "small.png")
    with pytest.raises(
        ValueError, match=r"small\.png: mask size 8x8 differs from the image size 16x16"
    ):
        data.load_samples(tmp_path / "train")


def test_a_non_binary_mask_warns_and_counts_pixels_above_zero(tmp_path):
    sample = write_sample(tmp_path / "train", "a", np.zeros((8, 8), np.uint8), [])
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = [[10, 128, 255]] * 3
    Image.fromarray(mask).save(sample / "masks" / "grey.png")
    with pytest.warns(data.MaskWarning, match="not binary"):
        ((_, _, labels),) = data.load_samples(tmp_path / "train")
    assert (labels == 1).sum() == 9


def test_duplicated_image_ids_are_refused(tmp_path):
    write_sample(tmp_path / "train", "a", np.zeros((8, 8), np.uint8), [])
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        data.load_samples(tmp_path / "train", ids=["a", "a"], with_labels=False)
    ids = tmp_path / "ids.txt"
    ids.write_text("a\na\n")
    # The whole message: the test's temporary folder is named after the test, so a bare
    # "duplicate" would be found in the path of any error about this file.
    with pytest.raises(ValueError, match=r"ids\.txt: some image ids appear more than once$"):
        data.load_ids(ids)


@pytest.mark.parametrize(
    "name, array",
    [
        ("all-black", np.zeros((40, 40, 3), np.uint8)),
        ("one-pixel", np.full((1, 1), 200, np.uint8)),
        ("16-bit", np.full((20, 30), 40000, np.uint16)),
        ("rgba", np.dstack([np.full((12, 12, 3), 90, np.uint8), np.full((12, 12), 255, np.uint8)])),
    ],
)
def test_degenerate_images_train_through_the_pipeline(tmp_path, name, array):
    path = tmp_path / f"{name}.png"
    Image.fromarray(array).save(path)
    image = decoding.read_image(path)
    assert image.shape == (*array.shape[:2], 3) and 0 <= image.min() <= image.max() <= 1
    samples = pipeline.pack_samples([image], [np.zeros(image.shape[:2], np.int32)])
    images, targets = next(iter(pipeline.make_training_dataset(samples, 16, 2, "border")))
    assert images.shape == (2, 16, 16, 3) and targets.shape == (2, 16, 16, 2)


@pytest.fixture
def messy_folder(tmp_path):
    folder = tmp_path / "messy"
    folder.mkdir()
    for kind in KINDS:
        (folder / f"{kind}.png").write_bytes(unreadable(kind, tmp_path)[0])
    (folder / "README.md").write_text("not an image; ignored in folders")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "all-black.png")
    Image.fromarray(np.full((1, 1), 255, np.uint8)).save(folder / "one-pixel.png")
    rgba = np.zeros((50, 50, 4), np.uint8)
    rgba[disc((50, 50), (25, 25), 10)] = [220, 220, 220, 255]
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(folder / "rgba.png")
    large = np.zeros((1100, 1300), np.uint16)
    large[disc(large.shape, (500, 600), 30)] = 3000
    tifffile.imwrite(folder / "large-16bit.tif", large)
    return folder


def test_predict_goes_through_a_messy_folder(messy_folder, tmp_path, capsys, request):
    model_path = request.getfixturevalue("disc_model_path")
    output = tmp_path / "out"
    status = cli(["predict", str(messy_folder), "-o", str(output), "--model", str(model_path)])
    err = capsys.readouterr().err
    assert status == 1
    for kind in KINDS:
        assert f"{kind}.png" in err
    assert f"{len(KINDS)} of 7 images skipped" in err
    summary = pd.read_csv(output / "summary.csv").set_index("image")
    assert summary.loc["all-black.png", "nuclei"] == 0
    assert summary.loc["rgba.png", "nuclei"] == 1
    assert summary.loc["large-16bit.tif", "nuclei"] == 1
    assert summary.loc["one-pixel.png", ["height", "width"]].tolist() == [1, 1]
    assert "README.md" not in err and len(find_images([messy_folder])) == 7
