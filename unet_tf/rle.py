"""Run-length encoding of masks as the Data Science Bowl 2018 defines it.

Pixels are numbered from 1, top to bottom and then left to right (column-major order), and
a mask is written as space-separated ``start length`` pairs, sorted by start, with no two
runs sharing a pixel.
"""

import numpy as np


def rle_encode(mask) -> str:
    """Encode a binary mask as Kaggle run-length pairs.

    Parameters
    ----------
    mask : array_like
        2-D binary mask.

    Returns
    -------
    str
        ``"start length start length ..."``; the empty string for an empty mask.

    Examples
    --------
    >>> rle_encode(np.array([[1, 0, 1], [1, 0, 1]]))
    '1 2 5 2'
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    pixels = np.concatenate([[0], mask.astype(bool).ravel(order="F").astype(np.int8), [0]])
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    starts, ends = changes[::2], changes[1::2]
    runs = np.empty(2 * len(starts), dtype=np.int64)
    runs[0::2], runs[1::2] = starts, ends - starts
    return " ".join(map(str, runs))


def parse_rle(rle: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Parse and validate a run-length string into an ``(n_runs, 2)`` array of (start, length).

    Raises
    ------
    ValueError
        If the string holds non-integers or an odd count of numbers, a start below 1 or a
        length below 1, runs that are unsorted or overlap, or (with ``shape``) a run past
        the last pixel.

    Examples
    --------
    >>> parse_rle("1 2 5 2")
    array([[1, 2],
           [5, 2]])
    >>> parse_rle("5 2 1 2")
    Traceback (most recent call last):
    ...
    ValueError: run-length pairs are not sorted or overlap at run 2 (start 1)
    """
    if not isinstance(rle, str):
        raise ValueError(f"a run-length encoding is a string, got {type(rle).__name__}")
    tokens = rle.split()
    if len(tokens) % 2:
        raise ValueError(f"odd number of values ({len(tokens)}) in run-length string")
    try:
        runs = np.array([int(token) for token in tokens], dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise ValueError(
            f"run-length string holds a value that is not an integer: {rle[:60]!r}"
        ) from None
    if runs.size == 0:
        return runs
    if (runs[:, 0] < 1).any():
        raise ValueError("run-length starts must be at least 1 (pixels are numbered from 1)")
    if (runs[:, 1] < 1).any():
        raise ValueError("run lengths must be at least 1")
    ends = runs[:, 0] + runs[:, 1]
    bad = np.flatnonzero(runs[1:, 0] < ends[:-1])
    if bad.size:
        index = int(bad[0]) + 1
        raise ValueError(
            f"run-length pairs are not sorted or overlap at run {index + 1} "
            f"(start {runs[index, 0]})"
        )
    if shape is not None and ends[-1] - 1 > shape[0] * shape[1]:
        raise ValueError(
            f"run ends at pixel {ends[-1] - 1}, past the last pixel of a "
            f"{shape[0]}x{shape[1]} image ({shape[0] * shape[1]})"
        )
    return runs


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle run-length string into a boolean mask of ``shape`` (height, width).

    Examples
    --------
    >>> rle_decode("1 2 5 2", (2, 3)).astype(int)
    array([[1, 0, 1],
           [1, 0, 1]])
    """
    runs = parse_rle(rle, shape)
    flat = np.zeros(shape[0] * shape[1] + 1, dtype=np.int32)
    # Mark run starts with +1 and ends with -1; the cumulative sum is then the mask.
    np.add.at(flat, runs[:, 0] - 1, 1)
    np.add.at(flat, runs[:, 0] - 1 + runs[:, 1], -1)
    return np.cumsum(flat[:-1]).astype(bool).reshape(shape[1], shape[0]).T


def labels_to_rles(labels) -> list[str]:
    """Encode each object of an instance-label image, in increasing label order.

    Labels that cover no pixel are skipped, so every string is non-empty.

    Examples
    --------
    >>> labels_to_rles(np.array([[1, 0, 2], [1, 0, 2]]))
    ['1 2', '5 2']
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    # One sort of the column-major pixel order groups each object's pixels; runs are then
    # found per object without scanning the whole image once per object.
    flat = labels.ravel(order="F")
    positions = np.flatnonzero(flat)
    if positions.size == 0:
        return []
    order = np.argsort(flat[positions], kind="stable")
    positions, values = positions[order], flat[positions][order]
    boundaries = np.flatnonzero(np.diff(values)) + 1
    rles = []
    for object_positions in np.split(positions, boundaries):
        breaks = np.flatnonzero(np.diff(object_positions) != 1) + 1
        starts = object_positions[np.concatenate([[0], breaks])] + 1
        lengths = np.diff(np.concatenate([[0], breaks, [object_positions.size]]))
        runs = np.empty(2 * len(starts), dtype=np.int64)
        runs[0::2], runs[1::2] = starts, lengths
        rles.append(" ".join(map(str, runs)))
    return rles
