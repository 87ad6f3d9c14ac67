"""Microscope files in ``predict``: z-stacks, time series, channels, and no silent answers."""

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import disc_labels

from unet_tf import decoding
from unet_tf.__main__ import main as cli

SHAPE = (64, 72)
# One more disc in every plane: plane k holds k + 1 nuclei.
PLANE_DISCS = [((14, 14), 5), ((14, 50), 6), ((45, 20), 7), ((48, 55), 6), ((30, 36), 4)]


def plane(count: int, value: int = 200) -> np.ndarray:
    return ((disc_labels(SHAPE, PLANE_DISCS[:count]) > 0) * value).astype(np.uint8)


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    zstack = np.stack([plane(count) for count in range(1, 6)])
    tifffile.imwrite(folder / "zstack.tif", zstack, imagej=True, metadata={"axes": "ZYX"})
    series = np.stack([plane(count) for count in (2, 4, 3)])
    tifffile.imwrite(folder / "series.ome.tif", series, ome=True, metadata={"axes": "TYX"})
    # Three channels: the nuclei (3 discs) in channel 1, others elsewhere.
    channels = np.stack([plane(5, 90), plane(3), plane(1, 30)])
    tifffile.imwrite(folder / "channels.ome.tif", channels, ome=True, metadata={"axes": "CYX"})
    two = np.stack([plane(2), plane(4)], axis=-1)
    tifffile.imwrite(folder / "two.tif", two, photometric="minisblack", planarconfig="contig")
    return folder


def test_the_axes_of_imagej_and_ome_files_are_read(files):
    z = decoding.read_stack(files / "zstack.tif")
    assert (z.axes, z.shape, len(z.planes)) == ("Z", (5,), 5)
    assert z.planes[0].shape == SHAPE
    t = decoding.read_stack(files / "series.ome.tif")
    assert (t.source_axes, t.axes, t.shape) == ("TYX", "T", (3,))
    assert decoding.read_stack(files / "channels.ome.tif", channel=1).planes[0].max() == 200


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "channels.ome.tif",
            r"axes CYX, shape \(3, 64, 72\): 3 channels; .*--channel N \(0 to 2\)",
        ),
        ("two.tif", r"axes YXS, shape \(64, 72, 2\): 2 channels; .*--channel N \(0 to 1\)"),
    ],
)
def test_several_channels_without_a_choice_are_refused_with_the_option_to_use(files, name, message):
    with pytest.raises(ValueError, match=message):
        decoding.read_stack(files / name)
    with pytest.raises(ValueError, match="--channel must be 0 to"):
        decoding.read_stack(files / name, channel=5)


def test_a_stack_where_one_image_is_expected_is_a_clear_error(files):
    with pytest.raises(ValueError, match=r"a stack of 5 planes .*axes ZYX"):
        decoding.read_image(files / "zstack.tif")
    with pytest.raises(ValueError, match="not both"):
        decoding.read_stack(files / "zstack.tif", plane=1, max_projection=True)


def run(model, *arguments):
    return cli(["predict", "--model", str(model), "--quiet", "--no-rescale", *arguments])


def test_every_plane_of_a_z_stack_and_a_time_series_is_segmented(
    files, disc_model_path, tmp_path, capsys
):
    output = tmp_path / "out"
    status = run(
        disc_model_path, str(files / "zstack.tif"), str(files / "series.ome.tif"), "-o", str(output)
    )
    assert status == 0, capsys.readouterr().err
    labels = tifffile.imread(output / "zstack_labels.tif")
    assert labels.shape == (5, *SHAPE)
    assert [int(p.max()) for p in labels] == [1, 2, 3, 4, 5]
    with tifffile.TiffFile(output / "zstack_labels.tif") as written:
        assert written.series[0].axes == "ZYX"
    series = tifffile.imread(output / "series.ome_labels.tif")
    assert [int(p.max()) for p in series] == [2, 4, 3]
    summary = pd.read_csv(output / "summary.csv")
    zrows = summary[summary.image == "zstack.tif"]
    assert list(zrows.plane) == [0, 1, 2, 3, 4] and list(zrows.nuclei) == [1, 2, 3, 4, 5]
    nuclei = pd.read_csv(output / "nuclei.csv")
    assert nuclei[nuclei.image == "zstack.tif"].groupby("plane").size().tolist() == [1, 2, 3, 4, 5]
    assert (output / "zstack_overlay_p004.png").is_file()


def test_plane_max_projection_and_channel_choose_what_is_segmented(
    files, disc_model_path, tmp_path, capsys
):
    cases = {
        ("--plane", "2"): ("zstack.tif", 3),
        ("--max-projection",): ("zstack.tif", 5),
        ("--channel", "1"): ("channels.ome.tif", 3),
    }
    for index, (options, (name, count)) in enumerate(cases.items()):
        output = tmp_path / f"out{index}"
        assert run(disc_model_path, str(files / name), "-o", str(output), *options) == 0
        labels = tifffile.imread(output / f"{name.removesuffix('.tif')}_labels.tif")
        assert labels.shape == SHAPE and labels.max() == count, options
    # Without --channel the file is skipped, named, and the exit status says so.
    output = tmp_path / "refused"
    assert run(disc_model_path, str(files / "channels.ome.tif"), "-o", str(output)) == 1
    assert "3 channels; say which one holds the nuclei" in capsys.readouterr().err


def test_command_line_mistakes_about_outputs_and_models_end_in_one_line(
    files, disc_model_path, tmp_path, capsys
):
    a_file = tmp_path / "results.csv"
    a_file.write_text("not a folder")
    assert run(disc_model_path, str(files / "zstack.tif"), "-o", str(a_file)) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    below_a_file = a_file / "out"
    assert run(disc_model_path, str(files / "zstack.tif"), "-o", str(below_a_file)) == 2
    assert "cannot write the outputs" in capsys.readouterr().err
    not_a_model = tmp_path / "model.keras"
    not_a_model.write_text("not a model")
    status = cli(["predict", "--model", str(not_a_model), str(files), "-o", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert status == 2 and "not a Keras model file" in captured.err
    assert "Traceback" not in captured.err + captured.out
