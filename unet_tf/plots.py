"""Figures shared by the notebooks: outline overlays and image grids (matplotlib)."""

import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries

from unet_tf.files import atomic_path

TRUTH_COLOUR = (0.1, 1.0, 0.1)
PREDICTION_COLOUR = (1.0, 0.2, 0.8)


def overlay(image: np.ndarray, truth=None, prediction=None) -> np.ndarray:
    """RGB copy of ``image`` with object outlines: truth in green, prediction in magenta."""
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3].copy()
    rgb = np.clip(rgb, 0, 1)
    for labels, colour in ((truth, TRUTH_COLOUR), (prediction, PREDICTION_COLOUR)):
        if labels is not None:
            rgb[find_boundaries(labels, mode="inner")] = colour
    return rgb


def show_grid(panels, titles=None, columns: int = 4, size: float = 3.2, path=None):
    """Show images in a grid, save it to ``path`` if given, and return the figure."""
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
