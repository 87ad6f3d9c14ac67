"""Readers, dataset index and validation split, on synthetic files with known content."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import disc, write_sample
from PIL import Image

from unet_tf import data, decoding


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("gray8", 100 / 255),
        ("gray16", 40000 / 65535),
        ("rgb8", 100 / 255),
        ("rgba8", 100 / 255),
        ("la8", 100 / 255),
        ("palette", 100 / 255),
        ("rgb16", 40000 / 65535),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_flavour_becomes_float32_in_unit_range(tmp_path, make, expected, channels):
    path = tmp_path / f"{make}.png"
    if make == "gray8":
        save(path, np.full((5, 7), 100, np.uint8))
    elif make == "gray16":
        save(path, np.full((5, 7), 40000, np.uint16))
    elif make == "rgb8":
        save(path, np.full((5, 7, 3), 100, np.uint8))
    elif make == "rgba8":
        rgba = np.full((5, 7, 4), 100, np.uint8)
        rgba[..., 3] = 7  # Alpha is dropped, never mixed into the colour.
        save(path, rgba)
    elif make == "la8":
        Image.fromarray(np.full((5, 7), 100, np.uint8)).convert("LA").save(path)
    elif make == "palette":
        rgb = Image.fromarray(np.full((5, 7, 3), 100, np.uint8))
        rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif make == "rgb16":
        import tensorflow as tf

        path.write_bytes(tf.io.encode_png(np.full((5, 7, 3), 40000, np.uint16)).numpy())
    image = decoding.read_image(path, channels=channels)
    assert image.dtype == np.float32
    assert image.shape == (5, 7, channels)
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_colour_to_one_channel_uses_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 1] = 255
    image = decoding.read_image(save(tmp_path / "green.png", rgb), channels=1)
    np.testing.assert_allclose(image, 0.587, atol=1e-6)


def test_bad_channel_count_is_rejected(tmp_path):
    path = save(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        decoding.read_image(path, channels=4)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"this is text, not a PNG", "cannot read the image"),
        ("truncated", "cannot read the image"),
    ],
)
def test_unreadable_files_raise_an_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "broken.png"
    if content == "truncated":
        good = save(
            tmp_path / "good.png",
            (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8),
        )
        content = good.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        decoding.read_image(path)
    assert str(path) in str(info.value)


def test_missing_image_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image file"):
        decoding.read_image(tmp_path / "nothing.png")


def test_labels_are_one_instance_per_mask(disc_sample):
    sample, expected = disc_sample
    labels = data.read_labels(sample)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)


def test_missing_masks_folder_is_a_clear_error(tmp_path):
    sample = write_sample(tmp_path, "nomasks", np.zeros((8, 8), np.uint8), masks=None)
    with pytest.raises(FileNotFoundError, match="no masks/ folder"):
        data.read_labels(sample)


def test_mask_of_another_size_raises(tmp_path):
    sample = write_sample(tmp_path, "s", np.zeros((8, 8), np.uint8), [np.ones((8, 9), bool)])
    with pytest.raises(ValueError, match=r"mask size 9x8 differs from the image size 8x8"):
        data.read_labels(sample)


def test_empty_masks_are_skipped_with_a_warning(tmp_path):
    masks = [np.zeros((8, 8), bool), disc((8, 8), (4, 4), 2)]
    sample = write_sample(tmp_path, "s", np.zeros((8, 8), np.uint8), masks)
    with pytest.warns(data.MaskWarning, match="skipped 1 empty mask"):
        labels = data.read_labels(sample)
    assert labels.max() == 1
    assert (labels == 1).sum() == disc((8, 8), (4, 4), 2).sum()


def test_overlapping_masks_keep_the_first_and_warn_or_raise(tmp_path):
    first, second = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    first[:, :5], second[:, 3:] = True, True
    sample = write_sample(tmp_path, "s", np.zeros((8, 8), np.uint8), [first, second])
    with pytest.warns(data.MaskWarning, match="16 pixels claimed by more than one mask"):
        labels = data.read_labels(sample)
    assert (labels[:, :5] == 1).all() and (labels[:, 5:] == 2).all()
    with pytest.raises(ValueError, match="16 pixels overlap"):
        data.read_labels(sample, on_overlap="raise")


def test_non_binary_mask_warns_and_thresholds_above_zero(tmp_path):
    sample = write_sample(tmp_path, "s", np.zeros((4, 4), np.uint8), [])
    soft = np.zeros((4, 4), np.uint8)
    soft[1, 1], soft[2, 2] = 255, 90
    save(sample / "masks" / "soft.png", soft)
    with pytest.warns(data.MaskWarning, match="not binary"):
        labels = data.read_labels(sample)
    assert labels[1, 1] == 1 and labels[2, 2] == 1 and labels.sum() == 2


def test_label_cache_gives_the_same_labels_and_is_used(disc_sample, tmp_path):
    sample, expected = disc_sample
    cache = tmp_path / "cache"
    first = data.read_labels_cached(sample, expected.shape, cache)
    cached_file = cache / f"{sample.name}.png"
    assert cached_file.is_file()
    # Tamper with the cache: a fresh cache file must be read instead of the masks.
    tampered = np.zeros(expected.shape, np.uint16)
    Image.fromarray(tampered).save(cached_file)
    second = data.read_labels_cached(sample, expected.shape, cache)
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, tampered)


def test_load_samples_reads_in_order_with_labels(tmp_path):
    root = tmp_path / "train"
    for index in range(3):
        write_sample(
            root, f"id{index}", np.full((6, 6), 50, np.uint8), [disc((6, 6), (3, 3), index)]
        )
    loaded = data.load_samples(root, ids=["id2", "id0"], workers=2)
    assert [image_id for image_id, _, _ in loaded] == ["id2", "id0"]
    assert loaded[0][2].max() == 1
    with pytest.raises(FileNotFoundError, match="no such sample folder"):
        data.load_samples(root, ids=["missing"])


def test_imaging_type_separates_the_three_kinds():
    dark = np.zeros((10, 10, 3), np.float32)
    dark[2:5, 2:5] = 0.9
    bright_gray = np.full((10, 10, 3), 0.8, np.float32)
    stained = np.full((10, 10, 3), 0.8, np.float32)
    stained[..., 1] = 0.6
    assert data.imaging_type(dark) == "fluorescence"
    assert data.imaging_type(bright_gray) == "brightfield"
    assert data.imaging_type(stained) == "stained"


INDEX_COLUMNS = [
    "image_id", "path", "height", "width", "channels", "imaging_type",
    "nucleus_count", "median_nucleus_area", "coverage",
]  # fmt: skip


def test_build_index_columns_and_counts(disc_sample):
    sample, expected = disc_sample
    index = data.build_index(sample.parent)
    row = index.iloc[0]
    assert list(index.columns) == INDEX_COLUMNS
    assert (row.height, row.width, row.channels) == (64, 80, 4)
    assert row.imaging_type == "fluorescence"
    assert row.nucleus_count == 3
    assert row.median_nucleus_area == np.median(np.bincount(expected.ravel())[1:])
    assert row.coverage == pytest.approx((expected > 0).mean())


def test_build_index_describes_a_test_set_without_masks(tmp_path):
    image = np.full((6, 9, 3), 200, np.uint8)
    write_sample(tmp_path / "stage1_test", "t0", image, masks=None)
    index = data.build_index(tmp_path / "stage1_test", with_labels=False)
    assert list(index.columns) == INDEX_COLUMNS
    row = index.iloc[0]
    assert (row.image_id, row.height, row.width, row.channels) == ("t0", 6, 9, 3)
    assert row.imaging_type == "brightfield"
    assert index[["nucleus_count", "median_nucleus_area", "coverage"]].isna().all(axis=None)


def test_validation_split_is_seeded_and_stratified():
    index = pd.DataFrame(
        {
            "image_id": [f"i{k:03d}" for k in range(120)],
            "imaging_type": ["fluorescence"] * 100 + ["stained"] * 17 + ["brightfield"] * 3,
        }
    )
    first = data.make_validation_split(index, fraction=0.12, seed=7)
    assert first == data.make_validation_split(index, fraction=0.12, seed=7)
    assert first != data.make_validation_split(index, fraction=0.12, seed=8)
    kinds = index.set_index("image_id").loc[first, "imaging_type"].value_counts()
    assert kinds.to_dict() == {"fluorescence": 12, "stained": 2, "brightfield": 1}


def test_id_lists_round_trip_and_reject_duplicates(tmp_path):
    path = tmp_path / "ids.txt"
    data.save_ids(path, ["b", "a"], header="made by a test")
    assert data.load_ids(path) == ["a", "b"]
    path.write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="more than once"):
        data.load_ids(path)


def test_train_validation_ids_are_disjoint_and_complete(tmp_path):
    root = tmp_path / "train"
    for name in "abcd":
        write_sample(root, name, np.zeros((4, 4), np.uint8), [])
    data.save_ids(tmp_path / "val.txt", ["c"])
    train, validation = data.train_validation_ids(root, tmp_path / "val.txt")
    assert train == ["a", "b", "d"] and validation == ["c"]
    data.save_ids(tmp_path / "val.txt", ["z"])
    with pytest.raises(ValueError, match="not in"):
        data.train_validation_ids(root, tmp_path / "val.txt")


def test_warnings_name_the_image(tmp_path):
    masks = [np.zeros((8, 8), bool)]
    sample = write_sample(tmp_path, "named_sample", np.zeros((8, 8), np.uint8), masks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data.read_labels(sample)
    assert any("named_sample" in str(w.message) for w in caught)
