"""Segmentation losses for probability maps of shape ``(batch, height, width, channels)``.

Every loss returns one value per sample (the mean over pixels and channels), so Keras can
apply sample weights and average over the batch. Dice is computed per sample and channel
and then averaged, so a channel with few pixels (a thin border class, say) counts as much
as the nucleus body.
"""

from collections.abc import Callable

from keras import ops

EPSILON = 1e-7


def _as_float(y_true, y_pred):
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def _weighted_mean(loss, pixel_weights):
    if pixel_weights is not None:
        loss = loss * pixel_weights
    return ops.mean(loss, axis=(1, 2, 3))


def binary_crossentropy(y_true, y_pred, pixel_weights=None):
    """Pixel-wise binary cross-entropy, averaged per sample.

    ``pixel_weights`` (broadcastable to ``y_true``) multiplies each pixel's term.
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    loss = -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
    return _weighted_mean(loss, pixel_weights)


def dice_loss(y_true, y_pred, smooth: float = 1.0, pixel_weights=None):
    """Soft Dice loss, ``1 - (2 |A.B| + s) / (|A| + |B| + s)``, per sample and channel.

    ``pixel_weights`` is accepted for a common signature and ignored: Dice is a ratio over
    the crop, and weighting it would not stress single pixels.
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    intersection = ops.sum(y_true * y_pred, axis=(1, 2))
    total = ops.sum(y_true, axis=(1, 2)) + ops.sum(y_pred, axis=(1, 2))
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return ops.mean(1.0 - dice, axis=-1)


def bce_dice_loss(y_true, y_pred, pixel_weights=None):
    """Binary cross-entropy (weighted by ``pixel_weights`` if given) plus soft Dice loss."""
    return binary_crossentropy(y_true, y_pred, pixel_weights) + dice_loss(y_true, y_pred)


def focal_loss(y_true, y_pred, gamma: float = 2.0, alpha: float = 0.25, pixel_weights=None):
    """Binary focal loss (Lin et al., 2017), which down-weights easy pixels.

    ``alpha`` weighs the positive class and ``1 - alpha`` the negative one.
    """
    y_true, y_pred = _as_float(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    p_true = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
    alpha_true = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
    loss = -alpha_true * ops.power(1.0 - p_true, gamma) * ops.log(p_true)
    return _weighted_mean(loss, pixel_weights)


def pixel_weighted(loss: Callable) -> Callable:
    """Wrap ``loss`` for targets whose last channel holds a weight per pixel.

    The targets of :func:`unet_tf.pipeline.with_contact_weights` are the usual ``K`` channels
    plus one of weights. The cross-entropy and focal terms are multiplied by the weights
    pixel by pixel; the Dice term, a ratio over the whole crop, uses the targets alone.
    """

    def weighted_loss(y_true, y_pred):
        y_true, y_pred = _as_float(y_true, y_pred)
        targets, weights = y_true[..., :-1], y_true[..., -1:]
        return loss(targets, y_pred, pixel_weights=weights)

    weighted_loss.__name__ = f"pixel_weighted_{loss.__name__}"
    return weighted_loss


LOSSES: dict[str, Callable] = {
    "bce": binary_crossentropy,
    "dice": dice_loss,
    "bce_dice": bce_dice_loss,
    "focal": focal_loss,
}


def get_loss(name: str, pixel_weights: bool = False) -> Callable:
    """Return a loss function by name: ``bce``, ``dice``, ``bce_dice`` or ``focal``.

    With ``pixel_weights`` the loss expects targets with an extra last channel of weights
    (see :func:`pixel_weighted`).

    Raises
    ------
    ValueError
        If the name is unknown; the message lists the known names.
    """
    try:
        loss = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
    return pixel_weighted(loss) if pixel_weights else loss
