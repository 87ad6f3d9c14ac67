"""The setup cell of the Kaggle kernel: install this commit's ``unet_tf``, then set up.

:func:`unet_tf.kaggle.build_notebook` copies the source of this module into the kernel's
setup cell (the one after the parameters), followed by the package sources, the committed
validation ids and a call of :func:`set_up`. That cell runs before the package exists in the
kernel, so this module uses the standard library only.
"""

import sys
from pathlib import Path

# The folder of <output_root> that the package is written into, put first on sys.path.
PACKAGE_FOLDER = "unet_tf_package"


def set_up(
    sources: dict[str, str],
    committed_validation_ids: str,
    input_root: str | Path,
    output_root: str | Path,
    model_dir: str | Path = "",
    model_name: str = "unet",
) -> dict:
    """Write the package, point it at the competition data and attach a trained model.

    Parameters
    ----------
    sources
        The ``unet_tf`` source files, by file name (:func:`unet_tf.kaggle.package_sources`).
        They are written into ``<output_root>/unet_tf_package/unet_tf``, which is put first
        on ``sys.path``: the kernel runs exactly the code it was built from, with no internet
        and no pip install.
    committed_validation_ids
        The text of the repository's ``data/splits/validation_ids.txt``; the split the kernel
        uses is written by :func:`unet_tf.kaggle.write_validation_ids`.
    input_root, output_root
        The competition data and the folder everything is written into
        (:func:`unet_tf.kaggle.prepare`).
    model_dir, model_name
        If ``model_dir`` is given, ``<model_name>.keras`` and its tuned settings are copied
        from it into the models folder (:func:`unet_tf.kaggle.attach_model`).

    Returns
    -------
    dict
        The located competition files (:func:`unet_tf.kaggle.locate`), zips unpacked.

    Raises
    ------
    RuntimeError
        If ``unet_tf`` was already imported from elsewhere in this Python process.
    """
    package_root = Path(output_root) / PACKAGE_FOLDER
    package = package_root / "unet_tf"
    package.mkdir(parents=True, exist_ok=True)
    for file_name, text in sources.items():
        (package / file_name).write_text(text, encoding="utf-8")
    if str(package_root) not in sys.path:
        sys.path.insert(0, str(package_root))
    from unet_tf import config, kaggle

    # A package imported before this cell ran (an installed copy, say) would shadow the one
    # just written, and the kernel would run code other than the commit it was built from.
    imported = Path(kaggle.__file__).resolve().parent
    if imported != package.resolve():
        raise RuntimeError(
            f"unet_tf was imported from {imported}, not from {package} that this cell wrote; "
            "restart the kernel and run this cell before anything imports unet_tf"
        )
    found = kaggle.prepare(input_root, output_root)
    print({key: str(value) for key, value in found.items()})
    ids = [line for line in committed_validation_ids.splitlines() if line and line[0] != "#"]
    kaggle.write_validation_ids(config.VALIDATION_IDS, ids, found["train"])
    if model_dir:
        kaggle.attach_model(model_dir, config.MODELS_DIR, model_name)
    return found
