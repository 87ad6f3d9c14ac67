"""The Kaggle submission file: one row per nucleus, ``ImageId,EncodedPixels``, validated.

An image in which nothing was found gets one row with an empty ``EncodedPixels``, so that
every image of the test set appears in the file.
"""

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from unet_tf.files import atomic_path
from unet_tf.rle import labels_to_rles, parse_rle

COLUMNS = ["ImageId", "EncodedPixels"]


def listed_ids(sample_submission: str | Path | None, test_dir: str | Path) -> list[str]:
    """The image ids a submission must cover, each with its folder in ``test_dir``.

    They are the ids of the sample submission (plain or zipped CSV) when there is one, in
    its order, since that file defines the test set that is scored; otherwise the image
    folders of ``test_dir``.

    Raises
    ------
    FileNotFoundError
        If a listed image has no folder in ``test_dir``.
    ValueError
        If the sample submission has no ``ImageId`` column.
    """
    from unet_tf.data import list_sample_dirs

    test_dir = Path(test_dir)
    if sample_submission is None or not Path(sample_submission).is_file():
        return [path.name for path in list_sample_dirs(test_dir)]
    frame = pd.read_csv(sample_submission, dtype=str, keep_default_na=False)
    if "ImageId" not in frame.columns:
        raise ValueError(f"{sample_submission}: no ImageId column (found {list(frame.columns)})")
    ids = list(dict.fromkeys(frame["ImageId"]))
    missing = [image_id for image_id in ids if not (test_dir / image_id).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{sample_submission} lists {len(missing)} images that are not in {test_dir}, "
            f"e.g. {missing[0]}"
        )
    return ids


def submission_rows(image_id: str, labels: np.ndarray) -> list[tuple[str, str]]:
    """Rows of one image: its objects' run-length encodings (one empty row if none)."""
    rles = labels_to_rles(labels)
    return [(image_id, rle) for rle in rles] or [(image_id, "")]


def write_submission(rows: Iterable[tuple[str, str]], path: str | Path) -> pd.DataFrame:
    """Write submission rows to ``path`` atomically and return them as a DataFrame."""
    frame = pd.DataFrame(list(rows), columns=COLUMNS)
    with atomic_path(path) as partial:
        frame.to_csv(partial, index=False)
    return frame


def validate_submission(
    submission: str | Path | pd.DataFrame, image_shapes: Mapping[str, tuple[int, int]]
) -> dict:
    """Check a submission against the test images' shapes.

    Checks: the two columns; every image present and no unknown image; every run-length
    string valid for its image (integers, sorted, not overlapping, inside the image); and no
    pixel claimed by two objects of the same image.

    Parameters
    ----------
    submission : path or DataFrame
        The CSV file or its rows.
    image_shapes : mapping
        ``{image_id: (height, width)}`` of every test image.

    Returns
    -------
    dict
        ``images``, ``objects`` (non-empty rows) and ``empty_images``.

    Raises
    ------
    ValueError
        Naming the first problem found (the image id and row).
    """
    if isinstance(submission, (str, Path)):
        frame = pd.read_csv(submission, dtype=str, keep_default_na=False)
    else:
        frame = submission.astype(str)
    if list(frame.columns) != COLUMNS:
        raise ValueError(f"submission columns must be {COLUMNS}, got {list(frame.columns)}")
    present = set(frame["ImageId"])
    missing = sorted(set(image_shapes) - present)
    unknown = sorted(present - set(image_shapes))
    if missing:
        raise ValueError(f"{len(missing)} test images have no row, e.g. {missing[0]}")
    if unknown:
        raise ValueError(f"{len(unknown)} rows name images not in the test set, e.g. {unknown[0]}")
    objects, empty_images = 0, 0
    for image_id, group in frame.groupby("ImageId"):
        height, width = image_shapes[image_id]
        claimed = np.zeros(height * width, dtype=bool)
        encodings = [rle for rle in group["EncodedPixels"] if rle.strip()]
        if not encodings:
            empty_images += 1
        for row, rle in zip(group.index, group["EncodedPixels"], strict=True):
            if not rle.strip():
                continue
            try:
                runs = parse_rle(rle, (height, width))
            except ValueError as error:
                raise ValueError(f"{image_id} (row {row + 2}): {error}") from error
            pixels = np.concatenate([np.arange(s - 1, s - 1 + n) for s, n in runs])
            if claimed[pixels].any():
                raise ValueError(
                    f"{image_id} (row {row + 2}): overlaps another object of the image"
                )
            claimed[pixels] = True
            objects += 1
    return {"images": len(present), "objects": objects, "empty_images": empty_images}


@dataclass
class SubmissionResult:
    """What :func:`make_submission` wrote and found.

    Attributes
    ----------
    path : Path
        The validated ``submission.csv``.
    counts : dict
        Nuclei found per image id.
    shapes : dict
        ``(height, width)`` per image id.
    previews : dict
        ``(image, labels)`` of the image ids asked to be kept.
    check : dict
        The result of :func:`validate_submission`.
    seconds : float
        Time taken, reading to validation.
    quality : pandas.DataFrame or None
        With a quality estimate, a row per image: ``image_id``, ``nuclei``,
        ``expected_dsb``, ``reliable`` (also written as ``quality.csv`` beside the
        submission).
    """

    path: Path
    counts: dict
    shapes: dict
    previews: dict
    check: dict
    seconds: float
    quality: pd.DataFrame | None = None

    @property
    def megapixels(self) -> float:
        """Pixels predicted, in millions."""
        return sum(height * width for height, width in self.shapes.values()) / 1e6


def make_submission(
    model,
    settings: dict,
    test_dir: str | Path,
    path: str | Path,
    ids: Sequence[str] | None = None,
    keep: Iterable[str] = (),
    progress: bool = False,
    estimate=None,
) -> SubmissionResult:
    """Segment every test image, write ``submission.csv`` and validate it.

    Parameters
    ----------
    model : keras.Model
        The trained model.
    settings : dict
        Post-processing, TTA and tile size, as ``inference.read_settings`` gives them.
    test_dir : path
        Test images in the Kaggle layout (no masks needed).
    path : path
        The CSV to write.
    ids : sequence of str, optional
        The images to predict, in order (by default every folder of ``test_dir``;
        :func:`listed_ids` gives those of a sample submission).
    keep : iterable of str
        Image ids whose image and labels are returned, for a preview.
    progress : bool
        Show a progress bar.
    estimate : unet_tf.quality.QualityModel, optional
        The model's quality estimate: each image's expected score and whether it looks
        reliable go to ``quality.csv`` beside ``path``, as ``predict`` writes them.

    Images are read a few at a time (:func:`unet_tf.data.iter_samples`) and only counts
    are kept, so memory stays flat even for the 3,000 stage 2 images.
    """
    from tqdm.auto import tqdm

    from unet_tf import data, inference, quality

    started = time.monotonic()
    ids = [p.name for p in data.list_sample_dirs(test_dir)] if ids is None else list(ids)
    keep = set(keep)
    rows, counts, shapes, previews, verdicts = [], {}, {}, {}, []
    samples = data.iter_samples(test_dir, ids)
    for image_id, image, _ in tqdm(samples, total=len(ids), disable=not progress, unit="image"):
        if estimate is None:
            labels = inference.segment(model, image, settings)
        else:
            output, scale, spread = inference.predict(model, image, settings, spread=True)
            labels = inference.to_labels(output, settings, scale)
            _, verdict = quality.assess(estimate, labels, output, spread, scale, image)
            verdicts.append({"image_id": image_id, "nuclei": int(labels.max()), **verdict})
        rows += submission_rows(image_id, labels)
        counts[image_id], shapes[image_id] = int(labels.max()), image.shape[:2]
        if image_id in keep:
            previews[image_id] = (image, labels)
    write_submission(rows, path)
    check = validate_submission(path, shapes)
    table = None
    if estimate is not None:
        table = pd.DataFrame(verdicts, columns=["image_id", "nuclei", "expected_dsb", "reliable"])
        with atomic_path(Path(path).with_name("quality.csv")) as partial:
            table.to_csv(partial, index=False, float_format="%.4g")
    seconds = time.monotonic() - started
    return SubmissionResult(Path(path), counts, shapes, previews, check, seconds, table)
