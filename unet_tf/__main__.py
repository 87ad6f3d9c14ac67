"""Command line of unet-tf: ``python -m unet_tf <command> ...``.

Commands
--------
predict
    Segment, count and measure nuclei in your own images (see :mod:`unet_tf.predict`).
export
    Export a trained model to SavedModel, TFLite and ONNX, checked against the original
    (see :mod:`unet_tf.export`).
"""

import argparse
import sys
from collections.abc import Sequence

COMMANDS = {"predict": "unet_tf.predict", "export": "unet_tf.export"}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command's ``main``; ``--help`` lists the commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="python -m unet_tf", description=__doc__)
        parser.add_argument("command", choices=sorted(COMMANDS))
        parser.parse_args(argv[:1])  # Prints usage and exits for a missing or unknown command.
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
