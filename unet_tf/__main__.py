"""``python -m unet_tf <command>``: see :mod:`unet_tf.cli` for the commands."""

import sys

from unet_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
