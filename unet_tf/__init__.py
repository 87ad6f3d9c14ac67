"""unet-tf: U-Net segmentation of cell nuclei (DSB2018) with Keras and TensorFlow.

The package is import-light on purpose: ``unet_tf.fetch`` and ``unet_tf.config`` use the
standard library only, so ``make data`` runs before the virtual environment exists.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import sys

# TensorFlow's C++ start-up chatter (CPU feature notes, oneDNN notices) drowns the notebooks'
# output; keep errors only unless the user asked for more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


@contextlib.contextmanager
def _stderr_muted():
    """Send file descriptor 2 to the null device for a while (C++ writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Import TensorFlow with its C++ start-up notices muted.

    ``import tensorflow`` prints "All log messages before absl::InitializeLog() ..." and
    "oneDNN custom operations are on ..." to the process's standard error, whatever
    ``TF_CPP_MIN_LOG_LEVEL`` says (a known TensorFlow issue); they would open every report
    and command output. Only that one import is muted: a failed import still raises its
    Python exception, and everything TensorFlow writes afterwards is shown. Set
    ``UNET_TF_TENSORFLOW_NOTICES=1`` to see them.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        # One use: remove the finder before looking TensorFlow up the usual way.
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with _stderr_muted():
                execute(module)

        spec.loader.exec_module = exec_module
        return spec


if "tensorflow" not in sys.modules and not os.environ.get("UNET_TF_TENSORFLOW_NOTICES"):
    sys.meta_path.insert(0, _QuietTensorFlowImport())
