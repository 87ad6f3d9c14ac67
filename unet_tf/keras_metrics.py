"""Streaming Keras metrics for thresholded predictions: pixel IoU and Dice.

They accumulate true positive, false positive and false negative pixel counts over every
batch of an epoch and compute the score from the totals, so the result equals the numpy
:func:`unet_tf.metrics.pixel_iou` / :func:`unet_tf.metrics.dice` of all pixels seen. (The
popular DSB2018 starter kernel's ``mean_iou`` averaged per-batch scores over a range of
thresholds of TensorFlow's two-class mean IoU, which is not this quantity.)
"""

import keras
from keras import ops


class _PixelCounts(keras.metrics.Metric):
    def __init__(self, threshold: float = 0.5, channel: int | None = None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.threshold = threshold
        self.channel = channel
        # Integer counters stay exact however many pixels an epoch holds.
        self.true_positives = self.add_variable((), initializer="zeros", dtype="int64", name="tp")
        self.false_positives = self.add_variable((), initializer="zeros", dtype="int64", name="fp")
        self.false_negatives = self.add_variable((), initializer="zeros", dtype="int64", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(f"{self.name} does not support sample weights")
        if self.channel is not None:
            y_true, y_pred = y_true[..., self.channel], y_pred[..., self.channel]
        truth = ops.cast(y_true, "float32") > 0.5
        predicted = ops.cast(y_pred, "float32") > self.threshold

        def count(condition):
            return ops.sum(ops.cast(condition, "int64"))

        self.true_positives.assign_add(count(ops.logical_and(truth, predicted)))
        self.false_positives.assign_add(count(ops.logical_and(ops.logical_not(truth), predicted)))
        self.false_negatives.assign_add(count(ops.logical_and(truth, ops.logical_not(predicted))))

    def reset_state(self):
        for variable in (self.true_positives, self.false_positives, self.false_negatives):
            variable.assign(ops.zeros((), dtype="int64"))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold, "channel": self.channel}

    def _ratio(self, numerator, denominator):
        numerator = ops.cast(numerator, "float64")
        denominator = ops.cast(denominator, "float64")
        # Nothing to find and nothing predicted is perfect agreement.
        safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
        return ops.cast(ops.where(denominator > 0, numerator / safe, 1.0), "float32")


@keras.saving.register_keras_serializable(package="unet_tf")
class PixelIoU(_PixelCounts):
    """Foreground IoU of predictions thresholded at ``threshold``, over all pixels seen.

    Parameters
    ----------
    threshold : float
        Predictions above it count as foreground; targets above 0.5 do.
    channel : int, optional
        Score only this output channel; by default all channels are pooled.

    Examples
    --------
    >>> import numpy as np
    >>> metric = PixelIoU()
    >>> y_true = np.array([[[[1.0], [1.0], [0.0], [0.0]]]])
    >>> metric.update_state(y_true, np.array([[[[0.9], [0.2], [0.7], [0.1]]]]))
    >>> round(float(metric.result()), 4)
    0.3333
    """

    def __init__(self, threshold: float = 0.5, channel: int | None = None, name="pixel_iou", **kw):
        super().__init__(threshold=threshold, channel=channel, name=name, **kw)

    def result(self):
        tp = self.true_positives
        return self._ratio(tp, tp + self.false_positives + self.false_negatives)


@keras.saving.register_keras_serializable(package="unet_tf")
class PixelDice(_PixelCounts):
    """Dice coefficient of predictions thresholded at ``threshold``, over all pixels seen.

    Examples
    --------
    >>> import numpy as np
    >>> metric = PixelDice()
    >>> y_true = np.array([[[[1.0], [1.0], [0.0], [0.0]]]])
    >>> metric.update_state(y_true, np.array([[[[0.9], [0.2], [0.7], [0.1]]]]))
    >>> round(float(metric.result()), 4)
    0.5
    """

    def __init__(self, threshold: float = 0.5, channel: int | None = None, name="pixel_dice", **kw):
        super().__init__(threshold=threshold, channel=channel, name=name, **kw)

    def result(self):
        tp = self.true_positives
        return self._ratio(2 * tp, 2 * tp + self.false_positives + self.false_negatives)
