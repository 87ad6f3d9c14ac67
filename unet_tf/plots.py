"""Figures shared by the notebooks and ``predict``: outline overlays and image grids.

Matplotlib is imported only by the functions that draw figures, so that :func:`overlay`
serves the command-line ``predict`` without loading a plotting backend.
"""

import numpy as np
from skimage.segmentation import find_boundaries

from unet_tf.files import atomic_path

TRUTH_COLOUR = (0.1, 1.0, 0.1)
PREDICTION_COLOUR = (1.0, 0.2, 0.8)


def overlay(
    image: np.ndarray,
    truth: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    as_uint8: bool = False,
) -> np.ndarray:
    """RGB copy of ``image`` with object outlines: truth in green, prediction in magenta.

    Parameters
    ----------
    image : numpy.ndarray
        ``(height, width, channels)`` in [0, 1]. With fewer than three channels the first is
        shown as gray; channels beyond the third (alpha) are dropped.
    truth, prediction : numpy.ndarray, optional
        ``(height, width)`` instance labels whose objects are outlined, the prediction on
        top where the two outlines meet.
    as_uint8 : bool
        Return 8-bit RGB, ready to save as PNG, instead of float in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)``, float in [0, 1] or uint8.

    Raises
    ------
    ValueError
        If ``image`` is not ``(height, width, channels)``.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be (height, width, channels), got shape {image.shape}")
    rgb = np.repeat(image[..., :1], 3, axis=-1) if image.shape[-1] < 3 else image[..., :3]
    rgb = np.clip(rgb, 0, 1)
    if as_uint8:
        rgb = np.round(rgb * 255).astype(np.uint8)
    for labels, colour in ((truth, TRUTH_COLOUR), (prediction, PREDICTION_COLOUR)):
        if labels is not None:
            # Colours are given in [0, 1]; an 8-bit result needs them on its own scale.
            value = np.round(np.multiply(colour, 255)) if as_uint8 else colour
            rgb[find_boundaries(labels, mode="inner")] = value
    return rgb


# The frame drawn round the overlay of an image whose segmentation looks unreliable.
UNRELIABLE_COLOUR = (255, 96, 0)


def mark_unreliable(overlay_rgb: np.ndarray, expected_dsb: float) -> np.ndarray:
    """An 8-bit overlay framed in orange, with a note of its expected score at the top left:
    the segmentation of this image looks unreliable (see :mod:`unet_tf.quality`)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(overlay_rgb)
    draw = ImageDraw.Draw(picture)
    height, width = overlay_rgb.shape[:2]
    thickness = max(2, min(height, width) // 100)
    draw.rectangle((0, 0, width - 1, height - 1), outline=UNRELIABLE_COLOUR, width=thickness)
    note = f"unreliable: expected DSB {expected_dsb:.2f}"
    box = draw.textbbox((thickness + 2, thickness + 2), note)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.text((thickness + 2, thickness + 2), note, fill=UNRELIABLE_COLOUR)
    return np.asarray(picture)


def show_grid(panels, titles=None, columns: int = 4, size: float = 3.2, path=None):
    """Show images in a grid, save it to ``path`` if given, and return the figure."""
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for index, panel in enumerate(panels):
        axis = axes.ravel()[index]
        axis.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
        if titles is not None:
            axis.set_title(titles[index], fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
    return figure


def save_figure(figure, path) -> None:
    """Save a figure as PNG (creating the folder, atomically), if ``path`` is given."""
    if path is not None:
        with atomic_path(path) as partial:
            figure.savefig(partial, dpi=100, bbox_inches="tight", format="png")


def learning_curves(history, best_epoch: int, path=None):
    """Training and validation loss, pixel IoU and Dice per epoch, the best epoch marked.

    ``history`` is the table of :class:`unet_tf.training.TrainingResult` (or the CSV log).
    """
    import matplotlib.pyplot as plt

    names = [name for name in ("loss", "pixel_iou", "pixel_dice") if name in history]
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    epochs = range(1, len(history) + 1)
    for axis, name in zip(axes[0], names, strict=True):
        axis.plot(epochs, history[name], label="training crops")
        axis.plot(epochs, history[f"val_{name}"], label="validation tiles")
        axis.axvline(best_epoch, color="gray", linestyle=":", label="best epoch")
        axis.set(xlabel="epoch", title=name)
        axis.legend()
    save_figure(figure, path)
    return figure


def threshold_sweep(table, path=None):
    """Validation DSB score against the nucleus threshold, per post-processing method.

    ``table`` is :attr:`unet_tf.evaluation.Tuning.sweep`; methods with more settings than
    the threshold show the best score at each threshold.
    """
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for method, rows in table.groupby("method", sort=False):
        best = rows.groupby("threshold").dsb_score.max()
        label = method if len(best) == len(rows) else f"{method} (best of grid)"
        axis.plot(best.index, best.values, marker="o", label=label)
    axis.set(xlabel="nucleus probability threshold", ylabel="validation DSB score")
    axis.legend()
    save_figure(figure, path)
    return figure


def expected_against_true(judged, threshold: float, path=None):
    """Expected against true DSB per image (:func:`unet_tf.quality.judge`), by imaging
    type, with the threshold below which images are flagged unreliable."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5))
    kinds = judged.group.str.split(" ").str[0]
    for kind in sorted(kinds.unique()):
        rows = judged[kinds == kind]
        axis.scatter(rows.expected_dsb, rows.dsb, s=14, alpha=0.7, label=kind)
    axis.plot([0, 1], [0, 1], color="gray", linewidth=0.8)
    axis.axvline(threshold, color="tab:orange", linestyle="--", label="flagged below")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="expected DSB", ylabel="true DSB")
    axis.legend()
    save_figure(figure, path)
    return figure


def best_and_worst(tuning, count: int = 4, path=None):
    """The ``count`` best and worst images of a tuning (truth green, prediction magenta)."""
    ranked = tuning.per_image.sort_values("dsb_score")
    picks = [*reversed([*ranked.tail(count).itertuples()]), *ranked.head(count).itertuples()]
    images = {image_id: (image, truth) for image_id, image, truth in tuning.samples}
    panels = [overlay(*images[row.image_id], tuning.labels(row.image_id)) for row in picks]
    titles = [
        f"{'best' if rank < count else 'worst'}: {row.imaging_type}, DSB {row.dsb_score:.2f}"
        for rank, row in enumerate(picks)
    ]
    return show_grid(panels, titles, path=path)


def worst_semantic(samples, outputs, per_image, count: int = 6, threshold=0.5, path=None):
    """The ``count`` images of lowest Dice of a semantic scoring (truth green, prediction
    magenta), titled with their Dice and HD95."""
    ranked = per_image.sort_values("dice").head(count)
    index = {sample[0]: i for i, sample in enumerate(samples)}
    panels, titles = [], []
    for row in ranked.itertuples():
        image_id, image, truth = samples[index[row.image_id]]
        predicted = (outputs[index[row.image_id]][..., 0] > threshold).astype(np.int32)
        panels.append(overlay(image, truth, predicted))
        titles.append(f"{image_id}: Dice {row.dice:.3f}, HD95 {row.hausdorff_95:.1f} px")
    return show_grid(panels, titles, columns=3, size=4.0, path=path)


def separation(tuning, baseline, count: int = 3, path=None):
    """The ``count`` images the chosen step improves most over ``baseline`` (a ``Step``).

    Each shows the baseline's objects beside the chosen step's: touching nuclei before and
    after they were separated.
    """
    chosen = tuning.per_image.set_index("image_id")
    before = tuning.results[baseline.name].set_index("image_id")
    gain = (chosen.dsb_score - before.dsb_score).sort_values(ascending=False)
    images = {image_id: (image, truth) for image_id, image, truth in tuning.samples}
    panels, titles = [], []
    for image_id in gain.index[:count]:
        image, truth = images[image_id]
        first, second = tuning.labels(image_id, baseline), tuning.labels(image_id)
        panels += [overlay(image, truth, first), overlay(image, truth, second)]
        titles += [
            f"{baseline.name}: {first.max()} objects, DSB {before.dsb_score[image_id]:.2f}",
            f"chosen: {second.max()} objects (true {truth.max()}), "
            f"DSB {chosen.dsb_score[image_id]:.2f}",
        ]
    return show_grid(panels, titles, columns=2, size=5, path=path)


def samples_by_type(samples, kinds: dict, per_type: int = 4, seed: int = 0, path=None):
    """A few images of each imaging type with their nuclei outlined in green."""
    rng = np.random.default_rng(seed)
    by_id = {image_id: (image, labels) for image_id, image, labels in samples}
    panels, titles = [], []
    for kind in sorted(set(kinds.values())):
        ids = sorted(image_id for image_id in by_id if kinds.get(image_id) == kind)
        for image_id in rng.choice(ids, size=min(per_type, len(ids)), replace=False):
            image, labels = by_id[image_id]
            panels.append(overlay(image, truth=labels))
            titles.append(f"{kind}, {labels.max()} nuclei, {image.shape[1]}x{image.shape[0]}")
    return show_grid(panels, titles, path=path)


def counts_and_sizes(index, areas, path=None):
    """Histograms of nuclei per image and of nucleus areas, per imaging type.

    ``index`` has ``imaging_type`` and ``nucleus_count`` per image, ``areas`` has
    ``imaging_type`` and ``area`` per nucleus.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    top = index.nucleus_count.max()
    for kind, group in index.groupby("imaging_type"):
        axes[0].hist(group.nucleus_count, bins=40, range=(0, top), alpha=0.6, label=kind)
    for kind, group in areas.groupby("imaging_type"):
        axes[1].hist(np.log10(group.area), bins=50, alpha=0.6, label=kind, density=True)
    axes[0].set(xlabel="nuclei per image", ylabel="images", title="Crowding")
    axes[1].set(xlabel="log10 nucleus area (pixels)", ylabel="density", title="Nucleus size")
    for axis in axes:
        axis.legend()
    save_figure(figure, path)
    return figure
