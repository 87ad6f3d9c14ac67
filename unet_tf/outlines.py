"""Nuclei as polygons, for the tools biologists correct results in: Fiji and QuPath.

:func:`polygons` traces the outline of every object of a label image. The outline follows
the pixel edges (coordinates in pixels, ``x`` to the right and ``y`` down from the image's
top-left corner, as ImageJ and QuPath count them), so a polygon's area is close to the
object's pixel count: the outline is traced on the object upsampled ``upsample`` times
(8 by default), which puts it on the pixel edges but for its corners, cut by a sixteenth
of a pixel.

:func:`write_imagej_rois` writes them as an ImageJ ROI set (a zip that Fiji's ROI Manager
opens), :func:`write_geojson` as GeoJSON features that QuPath imports.
"""

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from unet_tf import files


def polygons(labels: np.ndarray, upsample: int = 8) -> dict[int, np.ndarray]:
    """The outline of every object of ``labels``: ``{label: (n, 2) array of x, y}``.

    An object in several pieces gives the outline of its largest piece.

    Examples
    --------
    A 4x4 square of pixels spans x from 3 to 7, and its outline has area 16:

    >>> labels = np.zeros((8, 8), np.int32)
    >>> labels[2:6, 3:7] = 5
    >>> outline = polygons(labels)[5]
    >>> float(outline[:, 0].min()), float(outline[:, 0].max()), round(polygon_area(outline), 1)
    (3.0, 7.0, 16.0)
    """
    from skimage.measure import find_contours

    outlines = {}
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == index
        big = np.pad(np.kron(mask, np.ones((upsample, upsample))), 1)
        contours = find_contours(big, 0.5)
        if not contours:
            continue
        contour = max(contours, key=len)
        # From upsampled, padded pixel centres back to image coordinates, in which pixel
        # (row, col) spans [row, row + 1) x [col, col + 1).
        rows = (contour[:, 0] - 1 + 0.5) / upsample + box[0].start
        cols = (contour[:, 1] - 1 + 0.5) / upsample + box[1].start
        outlines[index] = np.round(np.stack([cols, rows], axis=1), 3)
    return outlines


def polygon_area(points: np.ndarray) -> float:
    """Area of a closed polygon of ``(x, y)`` points (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def write_imagej_rois(path: str | Path, planes: list[dict[int, np.ndarray]]) -> None:
    """One ImageJ polygon ROI per nucleus, named by its label, in a zip for the ROI Manager.

    ``planes`` holds the :func:`polygons` of each plane of a stack (one dict for a 2-D
    image); a stack's ROIs carry their plane as stack position, and their names are
    ``<plane>-<label>``.
    """
    import roifile

    rois = []
    for plane, outlines in enumerate(planes):
        for label, points in outlines.items():
            name = str(label) if len(planes) == 1 else f"{plane}-{label}"
            position = None if len(planes) == 1 else plane
            roi = roifile.ImagejRoi.frompoints(points, name=name, position=position)
            roi.roitype = roifile.ROI_TYPE.POLYGON
            rois.append(roi)
    with files.atomic_path(Path(path)) as partial:
        staged = partial.with_suffix(".zip")
        try:
            if rois:
                roifile.roiwrite(staged, rois, mode="w")
            else:
                # An image without nuclei gets an empty ROI set, a valid empty zip.
                import zipfile

                zipfile.ZipFile(staged, "w").close()
            staged.replace(partial)
        finally:
            staged.unlink(missing_ok=True)


def write_geojson(path: str | Path, planes: list[dict[int, np.ndarray]]) -> None:
    """One GeoJSON polygon feature per nucleus, as QuPath imports detections.

    Each feature has ``objectType`` "detection", the classification "Nucleus", and its label
    (and, for a stack, its plane) as properties.
    """
    features = []
    for plane, outlines in enumerate(planes):
        for label, points in outlines.items():
            ring = [[float(x), float(y)] for x, y in points]
            ring.append(ring[0])
            properties = {
                "objectType": "detection",
                "name": str(label),
                "label": int(label),
                "classification": {"name": "Nucleus"},
            }
            if len(planes) > 1:
                properties["plane"] = plane
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": properties,
                }
            )
    with files.atomic_path(Path(path)) as partial:
        partial.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
