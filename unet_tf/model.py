"""The U-Net (Ronneberger et al., 2015) as a Keras functional model, and padding helpers.

The encoder halves the resolution ``depth`` times with max pooling and doubles the filters
each time; the decoder upsamples with learned ``Conv2DTranspose`` layers and concatenates
the encoder features of the same scale. The input shape is ``(None, None, channels)``, so
one model serves training crops and whole images whose sides are a multiple of
``2**depth``; :func:`unet_tf.inference.predict_full` predicts images of any size.
"""

import keras
import numpy as np
from keras import layers


def _conv_block(x, filters: int, batch_norm: bool, dropout_rate: float, name: str):
    for index in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{index}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{index}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{index}")(x)
        if index == 1 and dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name=f"{name}_dropout")(x)
    return x


def get_model(
    input_channels: int = 3,
    num_classes: int = 1,
    depth: int = 4,
    base_filters: int = 16,
    batch_norm: bool = True,
    dropout_rate: float = 0.0,
    output_activation: str = "sigmoid",
    name: str = "unet",
) -> keras.Model:
    """Build a U-Net with a Conv2DTranspose decoder.

    Parameters
    ----------
    input_channels : int
        Channels of the input images (3 for the RGB arrays of :func:`unet_tf.decoding.read_image`).
    num_classes : int
        Output channels, one per target map (1 for a binary nucleus mask).
    depth : int
        Number of 2x downsamplings; image sides must be a multiple of ``2**depth``.
    base_filters : int
        Filters of the first level; each level below doubles them.
    batch_norm : bool
        Batch normalisation after every convolution.
    dropout_rate : float
        Dropout between the two convolutions of every block, in [0, 1).
    output_activation : str
        ``"sigmoid"`` (independent channels), ``"softmax"`` (exclusive classes) or
        ``"linear"`` (logits or regression targets).
    name : str
        The model's name.

    Returns
    -------
    keras.Model
        Maps ``(batch, height, width, input_channels)`` to
        ``(batch, height, width, num_classes)`` float32.

    Raises
    ------
    ValueError
        If an argument is out of range.
    """
    if input_channels < 1 or num_classes < 1:
        raise ValueError("input_channels and num_classes must be at least 1")
    if not 1 <= depth <= 7:
        raise ValueError(f"depth must be between 1 and 7, got {depth!r}")
    if base_filters < 1:
        raise ValueError(f"base_filters must be at least 1, got {base_filters!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
    if output_activation not in ("sigmoid", "softmax", "linear"):
        raise ValueError(
            f"output_activation must be 'sigmoid', 'softmax' or 'linear', got {output_activation!r}"
        )

    inputs = keras.Input(shape=(None, None, input_channels), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, batch_norm, dropout_rate, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _conv_block(x, base_filters * 2**depth, batch_norm, dropout_rate, "bottom")
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_tconv")(
            x
        )
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters, batch_norm, dropout_rate, f"up{level}")
    # The head computes in float32 so that a mixed-precision body still gives float32 outputs.
    outputs = layers.Conv2D(
        num_classes, 1, activation=output_activation, dtype="float32", name="head"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def model_depth(model: keras.Model) -> int:
    """Return the number of 2x downsamplings of a model built by :func:`get_model`.

    Objects that are not Keras models (an exported model wrapped for inference, say) give
    it as their ``depth`` attribute.
    """
    if hasattr(model, "depth") and not isinstance(model, keras.Model):
        return int(model.depth)
    return sum(isinstance(layer, layers.MaxPooling2D) for layer in model.layers)


def model_channels(model: keras.Model) -> int:
    """Input channels of a model: 3 for RGB models, 1 for ``nuclei_bright`` ones.

    Objects that are not Keras models (an exported model wrapped for inference) give it as
    their ``channels`` attribute (3 if they have none).
    """
    if not isinstance(model, keras.Model):
        return int(getattr(model, "channels", 3))
    return int(model.input_shape[-1])


def pad_to_shape(
    image: np.ndarray, shape: tuple[int, int], mode: str = "reflect"
) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad the two spatial axes of ``image`` at the bottom and right to at least ``shape``.

    Axes already as long as ``shape`` asks are left alone. Full-image inference uses it to
    grow an image to a whole tile whose sides the model's ``2**depth`` poolings divide.

    Parameters
    ----------
    image : numpy.ndarray
        An array whose first two axes are height and width.
    shape : tuple of int
        The least ``(height, width)`` of the result.
    mode : str
        A :func:`numpy.pad` mode. ``"reflect"`` mirrors the image without repeating its edge
        pixels, which keeps the texture that the model sees near the edge natural; an image
        only one pixel high or wide has nothing to mirror and repeats its edge instead.

    Returns
    -------
    tuple
        The padded array and the original ``(height, width)``, which
        :func:`crop_to_shape` uses to undo the padding.
    """
    height, width = image.shape[:2]
    padding = [(0, max(0, shape[0] - height)), (0, max(0, shape[1] - width))]
    padding += [(0, 0)] * (image.ndim - 2)
    if not any(after for _, after in padding):
        return image, (height, width)
    if mode == "reflect" and min(height, width) < 2:
        mode = "edge"
    return np.pad(image, padding, mode=mode), (height, width)


def crop_to_shape(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Undo :func:`pad_to_shape` on an array whose first two axes are spatial."""
    return array[: shape[0], : shape[1]]
