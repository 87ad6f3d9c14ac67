"""unet-tf: U-Net segmentation of cell nuclei (DSB2018) with Keras and TensorFlow.

The package is import-light on purpose: ``unet_tf.fetch`` and ``unet_tf.config`` use the
standard library only, so ``make data`` runs before the virtual environment exists.
"""

__version__ = "0.1.0"
