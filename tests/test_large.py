"""Large images in blocks: every nucleus once, seams included, as the whole image gives."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import disc_labels

from unet_tf import large, predict, trained
from unet_tf.__main__ import main as cli

BLOCK = 100
SHAPE = (330, 420)


def _discs(rng) -> list:
    """Discs away from each other, some centred on block seams (multiples of BLOCK)."""
    discs = []
    # On seams and on the corner where four blocks meet.
    for centre in [(100, 60), (250, 100), (200, 200), (100, 300), (300, 400), (165, 300)]:
        discs.append((centre, 9))
    while len(discs) < 40:
        centre = (int(rng.integers(12, SHAPE[0] - 12)), int(rng.integers(12, SHAPE[1] - 12)))
        radius = int(rng.integers(4, 10))
        if all(np.hypot(centre[0] - c[0], centre[1] - c[1]) > radius + r + 3 for c, r in discs):
            discs.append((centre, radius))
    return discs


@pytest.fixture
def image_file(tmp_path):
    """A 16-bit TIFF of discs whose brightness differs across the image."""
    discs = _discs(np.random.default_rng(7))
    truth = disc_labels(SHAPE, discs)
    brightness = np.linspace(3000, 4000, SHAPE[1])[None, :]
    pixels = np.where(truth > 0, brightness, 80).astype(np.uint16)
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "mosaic.tif", pixels)
    return folder / "mosaic.tif", truth


def _segment(model_path, image, output, *options):
    status = cli(
        ["predict", str(image), "-o", str(output), "--quiet", *options, "--model", str(model_path)]
    )
    assert status == 0
    labels = tifffile.imread(output / f"{image.stem}_labels.tif")
    return labels, pd.read_csv(output / "nuclei.csv"), pd.read_csv(output / "summary.csv")


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images hold the same objects, whatever their numbers."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs[0]) == len(np.unique(a)) == len(np.unique(b))


def test_blocks_give_every_disc_once_and_the_whole_image_answer(
    disc_model_path, image_file, tmp_path
):
    path, truth = image_file
    whole, whole_table, _ = _segment(disc_model_path, path, tmp_path / "whole", "--block-size", "0")
    blocks, table, summary = _segment(
        disc_model_path, path, tmp_path / "blocks", "--block-size", str(BLOCK)
    )
    # The model marks each disc exactly, so the truth is the answer, seams or not.
    assert _same_partition(whole, truth)
    assert _same_partition(blocks, truth)
    assert blocks.max() == len(table) == summary.nuclei[0] == truth.max()
    assert sorted(table.area) == sorted(whole_table.area)
    # Measurements are in image coordinates, not the blocks' (nuclei.csv holds 6 digits).
    for label, row in table.set_index("label").iterrows():
        ys, xs = np.nonzero(blocks == label)
        assert row.centroid_y == pytest.approx(ys.mean(), rel=1e-5)
        assert row.centroid_x == pytest.approx(xs.mean(), rel=1e-5)
        assert row.mean_intensity == pytest.approx(
            tifffile.imread(path)[blocks == label].mean(), rel=1e-5
        )


def test_a_nucleus_larger_than_the_overlap_is_counted_as_cut(disc_model_path, tmp_path):
    pixels = np.zeros((200, 200), np.uint8)
    pixels[disc_labels((200, 200), [((100, 100), 60)]) > 0] = 255
    net, settings, _ = trained.load_model_and_settings(disc_model_path)
    result = large.segment_large(
        net,
        pixels,
        tmp_path / "big.png",
        settings,
        "big",
        block_size=64,
        overlap=16,
        progress=False,
    )
    assert result.cut >= 1
    assert result.blocks == 16


def test_spans_cover_the_axis_once_and_is_large():
    cores = large.spans(1000, 300, 50)
    assert [(start, stop) for start, stop, _, _ in cores] == [
        (0, 300),
        (300, 600),
        (600, 900),
        (900, 1000),
    ]
    assert cores[1][2:] == (250, 650) and cores[0][2] == 0 and cores[-1][3] == 1000
    assert large.is_large((5000, 5000)) and not large.is_large((4096, 4096))
    assert large.is_large((300, 200), block_size=256) and not large.is_large((5000, 5000), 0)
    with pytest.raises(ValueError, match="block must be positive"):
        large.spans(100, 0, 10)


def test_large_labels_are_written_tiled(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "LARGE_LABELS", 100)
    labels = np.arange(64 * 48, dtype=np.int32).reshape(64, 48) % 7
    predict.write_labels(tmp_path / "big.tif", labels)
    with tifffile.TiffFile(tmp_path / "big.tif") as tiff:
        assert tiff.pages[0].is_tiled
        np.testing.assert_array_equal(tiff.asarray(), labels)


def test_a_negative_block_size_is_refused(disc_model_path, image_file, tmp_path, capsys):
    path, _ = image_file
    status = cli(
        [
            "predict",
            str(path),
            "-o",
            str(tmp_path / "o"),
            "--block-size",
            "-1",
            "--model",
            str(disc_model_path),
        ]
    )
    assert status == 2
    assert "--block-size must be 0 (never) or positive" in capsys.readouterr().err


def test_pngs_past_pillows_decompression_bomb_guard_are_read(tmp_path, monkeypatch):
    from PIL import Image

    from unet_tf import decoding

    # Pillow refuses images of more than twice MAX_IMAGE_PIXELS; a small guard stands in
    # for the real one (about 179 megapixels) so the test stays small.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.fromarray(np.full((40, 30), 7, np.uint8)).save(tmp_path / "mosaic.png")
    assert decoding.read_pixels(tmp_path / "mosaic.png").shape == (40, 30)
    assert Image.MAX_IMAGE_PIXELS == 100


def _blur_model(tmp_path, channels: int, tile_size: int):
    """A model that looks at its neighbours: a 5x5 mean of its input, thresholded
    (``sigmoid(20 * mean - 10)``). Near a block's edge its output differs from the whole
    image's unless the block reaches far enough past its core."""
    import keras
    from keras import layers

    inputs = keras.Input((None, None, channels))
    outputs = layers.Conv2D(1, 5, padding="same", activation="sigmoid", name="blur")(inputs)
    net = keras.Model(inputs, outputs)
    kernel = np.full((5, 5, channels, 1), 20 / (25 * channels), np.float32)
    net.get_layer("blur").set_weights([kernel, np.array([-10.0], np.float32)])
    path = tmp_path / f"blur{channels}.keras"
    net.save(path)
    from unet_tf import inference

    postprocess = {"method": "components", "threshold": 0.5, "min_area": 5}
    inference.write_settings(path, postprocess, tta=False, tile_size=tile_size)
    net, settings, _ = trained.load_model_and_settings(path)
    return net, settings


# Block cores of 100 pixels, extended by 40 on every side: less than the block, more than
# a disc (at most 19 pixels across) and the blur's reach (2 pixels) together.
OVERLAP = 40


@pytest.mark.parametrize(
    ("channels", "scale"), [(3, 1.0), (1, 1.0), (3, 2.0)], ids=["rgb", "one-channel", "rescaled"]
)
def test_blocks_of_a_model_that_sees_neighbours_equal_the_whole_image(
    image_file, tmp_path, channels, scale
):
    path, truth = image_file
    pixels = tifffile.imread(path)
    # One tile per block and for the whole image, so that only the blocks' seams differ.
    net, settings = _blur_model(tmp_path, channels, tile_size=1024)
    if scale != 1.0:
        settings = {**settings, "rescale": True, "nucleus_diameter": 16.0}
        settings["image_nucleus_diameter"] = 16.0 / scale

    def segment(block_size, overlap):
        return large.segment_large(
            net,
            pixels,
            path,
            settings,
            "mosaic",
            block_size=block_size,
            overlap=overlap,
            progress=False,
        )

    whole = segment(block_size=10_000, overlap=0)
    blocks = segment(block_size=BLOCK, overlap=OVERLAP)
    assert whole.blocks == 1 and blocks.blocks == 4 * 5
    assert blocks.scale == whole.scale == scale
    # Every disc once (the blurred outline is a little larger than the drawn one), none
    # found twice, none cut, and the very pixels of the whole image's answer.
    overlapping = np.unique(np.stack([truth.ravel(), whole.labels.ravel()]), axis=1)
    pairs = overlapping[:, (overlapping > 0).all(axis=0)]
    assert len(pairs[0]) == len(set(pairs[0])) == len(set(pairs[1])) == truth.max()
    assert whole.labels.max() == len(whole.table) == truth.max()
    assert blocks.duplicates == 0 and blocks.cut == 0
    if scale == 1.0:
        assert _same_partition(blocks.labels, whole.labels)
        assert sorted(blocks.table.area) == sorted(whole.table.area)
    else:
        # Enlarged, a block's Lanczos overshoot is clipped to the block's own range, which
        # moves a few edge pixels (30 of 140,000 here): the same nuclei, nearly the same
        # outlines (the smallest disc, of radius 4, loses the most: IoU 0.82).
        from unet_tf import metrics

        iou = metrics.iou_matrix(whole.labels, blocks.labels)
        assert iou.shape == (truth.max(), truth.max())
        assert (iou.max(axis=1) > 0.8).all() and (iou.max(axis=0) > 0.8).all()
        assert (blocks.labels > 0).sum() == pytest.approx((whole.labels > 0).sum(), rel=0.01)


def test_a_nucleus_two_blocks_both_found_is_kept_once_and_counted(
    disc_model_path, tmp_path, monkeypatch
):
    from unet_tf import inference

    # Two blocks, rows [0, 100) and [100, 200), each reaching 20 rows into the other. The
    # first finds a disc starting on row 99, the second the same disc a row lower, starting
    # in its own core: both keep it, and the second copy must be dropped as a duplicate.
    found = iter(
        [
            disc_labels((120, 100), [((108, 50), 9)]),
            disc_labels((120, 100), [((109 - 80, 50), 9)]),
        ]
    )
    monkeypatch.setattr(inference, "to_labels", lambda *args, **kwargs: next(found))
    net, settings, _ = trained.load_model_and_settings(disc_model_path)
    result = large.segment_large(
        net,
        np.zeros((200, 100), np.uint8),
        tmp_path / "seam.png",
        settings,
        "seam",
        block_size=100,
        overlap=20,
        progress=False,
    )
    assert result.blocks == 2 and result.duplicates == 1
    assert result.labels.max() == len(result.table) == 1
    np.testing.assert_array_equal(result.labels > 0, disc_labels((200, 100), [((108, 50), 9)]) > 0)
