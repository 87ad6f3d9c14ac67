"""Measuring nuclei: a row per nucleus of a label image, as ``nuclei.csv`` holds them."""

import numpy as np
import pandas as pd

NUCLEUS_COLUMNS = [
    "image",
    "plane",
    "label",
    "area",
    "perimeter",
    "centroid_y",
    "centroid_x",
    "equivalent_diameter",
    "eccentricity",
    "solidity",
    "mean_intensity",
]
MICROMETRE_COLUMNS = ["area_um2", "perimeter_um", "equivalent_diameter_um"]


def nucleus_columns(pixel_size: float | None, assessed: bool = False) -> list[str]:
    """The columns of ``nuclei.csv``: micrometre ones too when a pixel size is given, and
    ``confidence`` when the model has a quality estimate."""
    micrometres = MICROMETRE_COLUMNS if pixel_size else []
    return NUCLEUS_COLUMNS + micrometres + (["confidence"] if assessed else [])


def measure(
    labels: np.ndarray,
    intensity: np.ndarray,
    image_name: str,
    pixel_size: float | None = None,
    plane: int = 0,
) -> pd.DataFrame:
    """A row per nucleus of ``labels`` with the columns of ``NUCLEUS_COLUMNS``.

    ``plane`` is the plane of a stack the labels belong to (0 for a 2-D image).

    Lengths and areas are in pixels; with ``pixel_size`` (micrometres per pixel) the columns
    of ``MICROMETRE_COLUMNS`` are added.
    """
    from skimage.measure import regionprops_table

    columns = nucleus_columns(pixel_size)
    if labels.max() == 0:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(
        regionprops_table(
            labels,
            intensity_image=intensity,
            properties=(
                "label",
                "area",
                "perimeter",
                "centroid",
                "equivalent_diameter_area",
                "eccentricity",
                "solidity",
                "intensity_mean",
            ),
        )
    ).rename(
        columns={
            "centroid-0": "centroid_y",
            "centroid-1": "centroid_x",
            "equivalent_diameter_area": "equivalent_diameter",
            "intensity_mean": "mean_intensity",
        }
    )
    table.insert(0, "image", image_name)
    table.insert(1, "plane", plane)
    table["area"] = table["area"].astype(int)
    if pixel_size:
        table["area_um2"] = table["area"] * pixel_size**2
        table["perimeter_um"] = table["perimeter"] * pixel_size
        table["equivalent_diameter_um"] = table["equivalent_diameter"] * pixel_size
    return table[columns]
