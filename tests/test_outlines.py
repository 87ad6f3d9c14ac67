"""Nuclei outlines for Fiji (ImageJ ROI sets) and QuPath (GeoJSON), read back as they would be."""

import json

import numpy as np
import pytest
import roifile
import tifffile
from conftest import disc_labels
from PIL import Image

from unet_tf import outlines
from unet_tf.__main__ import main as cli

SHAPE = (90, 120)
DISCS = [((20, 20), 5), ((25, 70), 8), ((60, 30), 12), ((65, 95), 6)]


def test_every_nucleus_gets_a_polygon_of_its_area():
    labels = disc_labels(SHAPE, DISCS)
    traced = outlines.polygons(labels)
    assert sorted(traced) == [1, 2, 3, 4]
    for label, points in traced.items():
        area = int((labels == label).sum())
        assert outlines.polygon_area(points) == pytest.approx(area, rel=0.10)
        # Inside the image, around the right place.
        centre = np.argwhere(labels == label).mean(axis=0)[::-1] + 0.5
        assert np.allclose(points.mean(axis=0), centre, atol=1.0)
    assert outlines.polygons(np.zeros((8, 8), np.int32)) == {}


def test_predict_writes_rois_for_fiji_and_geojson_for_qupath(disc_model_path, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    labels = disc_labels(SHAPE, DISCS)
    rgb = np.repeat((labels > 0)[..., None], 3, -1).astype(np.uint8) * 255
    Image.fromarray(rgb).save(folder / "cells.png")
    output = tmp_path / "out"
    arguments = ["--model", str(disc_model_path), "--quiet", "--rois", "--geojson"]
    assert cli(["predict", *arguments, str(folder), "-o", str(output)]) == 0

    found = tifffile.imread(output / "cells_labels.tif").astype(np.int32)
    areas = {label: int((found == label).sum()) for label in range(1, found.max() + 1)}
    rois = roifile.roiread(output / "cells_rois.zip")
    assert len(rois) == len(DISCS) == len(areas)
    for roi in rois:
        assert roi.roitype == roifile.ROI_TYPE.POLYGON
        area = outlines.polygon_area(roi.coordinates())
        assert area == pytest.approx(areas[int(roi.name)], rel=0.10)

    collection = json.loads((output / "cells.geojson").read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert sorted(f["properties"]["name"] for f in features) == [str(k) for k in sorted(areas)]
    for feature in features:
        assert feature["geometry"]["type"] == "Polygon"
        ring = np.array(feature["geometry"]["coordinates"][0])
        assert (ring[0] == ring[-1]).all()
        label = feature["properties"]["label"]
        assert outlines.polygon_area(ring[:-1]) == pytest.approx(areas[label], rel=0.10)
