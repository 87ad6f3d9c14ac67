"""A viewer for Jupyter: an image, its nuclei, and the post-processing under sliders.

Choose an image (from the validation split, the test set or any folder), see it with the
predicted nuclei outlined (magenta) and, where there are labels, the true ones (green) and
the image's scores; move the sliders of the thresholds and the minimum area and see the
nuclei change at once. The network runs once per image; the sliders only redo the
post-processing. A table lists the nuclei with their measurements, as ``predict`` writes
them::

    from unet_tf import viewer
    viewer.from_validation().widget        # in a notebook cell

It needs ipywidgets, which Jupyter installs.
"""

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unet_tf import inference, metrics, plots, postprocess

# The sliders of each post-processing method: (setting, low, high, step).
SLIDERS = {
    "components": [("threshold", 0.05, 0.95, 0.05)],
    "watershed_distance": [("threshold", 0.05, 0.95, 0.05), ("min_distance", 1.0, 10.0, 0.5)],
    "watershed_border": [
        ("threshold", 0.05, 0.95, 0.05),
        ("marker_threshold", 0.05, 0.95, 0.05),
        ("border_threshold", 0.05, 0.95, 0.05),
    ],
    "watershed_center": [
        ("threshold", 0.05, 0.95, 0.05),
        ("marker_threshold", 0.05, 0.95, 0.05),
    ],
}


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


class Viewer:
    """The widgets and their state; ``widget`` is what a notebook cell shows.

    Parameters
    ----------
    model : keras.Model
        The trained model.
    samples : sequence of (name, image, labels or None)
        The images to choose from, with their true labels where known.
    settings : dict
        Inference settings (``inference.read_settings``): the sliders start at their
        post-processing, and TTA, tile size and rescaling are used as they say.
    estimate : unet_tf.quality.QualityModel, optional
        The model's quality estimate: the image's expected score and each nucleus'
        confidence are shown, as ``predict`` writes them.

    Attributes
    ----------
    labels : numpy.ndarray
        The nuclei shown now.
    scores : dict or None
        The image's scores (``metrics.image_scores``) when it has labels.
    """

    def __init__(self, model, samples: Sequence[tuple], settings: dict, estimate=None):
        import ipywidgets as widgets

        if not samples:
            raise ValueError("no images to show")
        self.model, self.settings, self.estimate = model, dict(settings), estimate
        self.samples = {name: (image, truth) for name, image, truth in samples}
        self._outputs: dict[str, tuple] = {}
        start = dict(settings["postprocess"])
        self.method = start.pop("method")
        self.picker = widgets.Dropdown(options=list(self.samples), description="image")
        self.sliders = {
            name: widgets.FloatSlider(
                value=float(start.get(name, (low + high) / 2)),
                min=low,
                max=high,
                step=step,
                description=name.replace("_", " "),
                continuous_update=False,
            )
            for name, low, high, step in SLIDERS[self.method]
        }
        self.sliders["min_area"] = widgets.IntSlider(
            value=int(start.get("min_area", postprocess.MIN_AREA)),
            min=0,
            max=200,
            description="min area",
            continuous_update=False,
        )
        self.picture = widgets.Image(format="png")
        self.summary = widgets.HTML()
        self.table = widgets.HTML()
        for control in [self.picker, *self.sliders.values()]:
            control.observe(lambda change: self.update(), names="value")
        controls = widgets.VBox([self.picker, *self.sliders.values(), self.summary])
        self.widget = widgets.VBox([widgets.HBox([self.picture, controls]), self.table])
        self.labels, self.scores = None, None
        self.update()

    def output(self, name: str) -> tuple:
        """The network's output for one image, the factor it was resampled by and the TTA
        views' disagreement (None without TTA), computed once."""
        if name not in self._outputs:
            image = self.samples[name][0]
            self._outputs[name] = inference.predict(self.model, image, self.settings, spread=True)
        return self._outputs[name]

    def postprocess_settings(self) -> dict:
        """The post-processing the sliders say now."""
        values = {name: slider.value for name, slider in self.sliders.items()}
        return {"method": self.method, **values}

    def update(self) -> None:
        """Redo the post-processing of the chosen image and redraw."""
        from unet_tf.measure import measure

        name = self.picker.value
        image, truth = self.samples[name]
        settings = {**self.settings, "postprocess": self.postprocess_settings()}
        output, scale, spread = self.output(name)
        self.labels = inference.to_labels(output, settings, scale)
        overlay = plots.overlay(image, truth=truth, prediction=self.labels, as_uint8=True)
        self.picture.value = _png(overlay)
        lines = [f"<b>{self.labels.max()}</b> nuclei found"]
        self.scores = None
        if truth is not None:
            self.scores = metrics.image_scores(truth, self.labels)
            lines += [
                f"{truth.max()} true nuclei",
                f"DSB score {self.scores['dsb_score']:.3f}",
                f"F1 at IoU 0.5 {self.scores['f1']:.3f}",
            ]
        nuclei = measure(self.labels, image.mean(axis=-1), name)
        if self.estimate is not None:
            from unet_tf import quality

            confidence, verdict = quality.assess(
                self.estimate, self.labels, output, spread, scale, image
            )
            nuclei["confidence"] = confidence
            judged = "looks reliable" if verdict["reliable"] else "<b>unreliable</b>: check by eye"
            lines.append(f"expected DSB {verdict['expected_dsb']:.3f} ({judged})")
        self.summary.value = "<br>".join(lines)
        self.table.value = nuclei.drop(columns=["image", "plane"]).round(2).to_html(index=False)


def _model_and_settings(model_path: str | Path | None):
    from unet_tf import config, trained

    return trained.load_model_and_settings(Path(model_path or config.MODELS_DIR / "unet.keras"))


def from_samples(samples, model_path: str | Path | None = None) -> Viewer:
    """A viewer of ``(name, image, labels or None)`` samples with a trained model (and its
    quality estimate, where one is saved beside it)."""
    from unet_tf import config, quality

    net, settings, _ = _model_and_settings(model_path)
    path = quality.quality_path(Path(model_path or config.MODELS_DIR / "unet.keras"))
    estimate = quality.QualityModel.load(path) if path.is_file() else None
    return Viewer(net, samples, settings, estimate)


def from_source(
    source: str = "validation", model_path: str | Path | None = None, max_images: int = 20
) -> Viewer:
    """A viewer of the validation split (``"validation"``, with labels), the test set
    (``"test"``), or the images of a folder (any other value, a path).

    Only the first ``max_images`` images are offered (0: all); the network runs on an image
    when it is first shown.
    """
    from unet_tf import config, data, decoding, evaluation, model_input, predict

    limit = max_images or None
    if source == "validation":
        samples = evaluation.validation_samples(max_images)
    elif source == "test":
        ids = [p.name for p in data.list_sample_dirs(config.TEST_DIR)][:limit]
        samples = data.load_samples(config.TEST_DIR, ids=ids, with_labels=False)
    else:
        paths = predict.find_images([source])[:limit]
        samples = [
            (path.name, model_input.to_model_input(decoding.read_pixels(path), path), None)
            for path in paths
        ]
    return from_samples(samples, model_path)
