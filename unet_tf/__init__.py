"""unet-tf: U-Net segmentation of cell nuclei (DSB2018) with Keras and TensorFlow.

The package is import-light on purpose: ``unet_tf.fetch`` and ``unet_tf.config`` use the
standard library only, so ``make data`` runs before the virtual environment exists.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU feature notes) drowns the notebooks'
# output; keep errors only unless the user asked for more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
