"""The submission writer and validator."""

import numpy as np
import pandas as pd
import pytest
from conftest import disc_labels

from unet_tf import rle, submission

SHAPES = {"a": (20, 30), "b": (10, 10)}


def written(tmp_path):
    labels = disc_labels(SHAPES["a"], [((5, 5), 3), ((12, 20), 4)])
    rows = submission.submission_rows("a", labels) + submission.submission_rows(
        "b", np.zeros((10, 10), int)
    )
    path = tmp_path / "submission.csv"
    submission.write_submission(rows, path)
    return path, labels


def test_rows_round_trip_and_validate(tmp_path):
    path, labels = written(tmp_path)
    frame = pd.read_csv(path, keep_default_na=False)
    assert list(frame.columns) == ["ImageId", "EncodedPixels"]
    assert submission.validate_submission(path, SHAPES) == {
        "images": 2,
        "objects": 2,
        "empty_images": 1,
    }
    decoded = [rle.rle_decode(r, SHAPES["a"]) for r in frame[frame.ImageId == "a"].EncodedPixels]
    np.testing.assert_array_equal(decoded[0], labels == 1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f[f.ImageId != "b"], "have no row"),
        (
            lambda f: pd.concat([f, pd.DataFrame({"ImageId": ["z"], "EncodedPixels": ["1 1"]})]),
            "not in the test set",
        ),
        (lambda f: pd.concat([f, f.iloc[:1]], ignore_index=True), "overlaps"),
        (
            lambda f: f.assign(
                EncodedPixels=f.EncodedPixels.replace({f.EncodedPixels[0]: "9999 5"})
            ),
            "past the last",
        ),
        (lambda f: f.rename(columns={"EncodedPixels": "rle"}), "columns"),
    ],
    ids=["missing image", "unknown image", "overlap", "outside", "columns"],
)
def test_invalid_submissions_are_refused(tmp_path, mutate, message):
    path, _ = written(tmp_path)
    frame = mutate(pd.read_csv(path, dtype=str, keep_default_na=False))
    with pytest.raises(ValueError, match=message):
        submission.validate_submission(frame, SHAPES)


def test_a_submission_with_a_quality_estimate_writes_quality_csv(tmp_path, disc_model_path):
    from PIL import Image
    from test_viewer import constant_estimate

    from unet_tf import inference, training

    test_dir = tmp_path / "test"
    for image_id, discs in (("one", [((10, 10), 5)]), ("two", [((8, 8), 4), ((20, 22), 5)])):
        folder = test_dir / image_id / "images"
        folder.mkdir(parents=True)
        image = (disc_labels((32, 32), discs) > 0).astype(np.uint8) * 230
        Image.fromarray(image).save(folder / f"{image_id}.png")
    net = training.load_model(disc_model_path)
    settings = inference.read_settings(disc_model_path)
    path = tmp_path / "out" / "submission.csv"
    plain = submission.make_submission(net, settings, test_dir, path)
    assert plain.quality is None and not path.with_name("quality.csv").exists()
    estimate = constant_estimate(0.25, threshold=0.3)
    result = submission.make_submission(net, settings, test_dir, path, estimate=estimate)
    written = pd.read_csv(path.with_name("quality.csv"))
    assert list(written.columns) == ["image_id", "nuclei", "expected_dsb", "reliable"]
    assert written.set_index("image_id").nuclei.to_dict() == {"one": 1, "two": 2}
    np.testing.assert_allclose(written.expected_dsb, 0.25)
    assert not written.reliable.any() and len(result.quality) == 2
