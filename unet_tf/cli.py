"""The command line: ``python -m unet_tf <command>`` (or ``unet-tf <command>``).

Commands
--------
train
    Train the U-Net on images in the Kaggle layout (:func:`unet_tf.training.train`); one
    option per field of :class:`unet_tf.training.TrainingConfig`.
evaluate
    Score a trained model on the validation split, per imaging type; with ``--tune``, choose
    its post-processing there first, as ``03-results`` does (:mod:`unet_tf.evaluation`).
predict
    Segment, count and measure nuclei in your own images (:mod:`unet_tf.predict_command`,
    :mod:`unet_tf.predict`).
export
    Export a trained model to SavedModel, TFLite and ONNX, checked against the original
    (:mod:`unet_tf.export_command`, :mod:`unet_tf.export`, :mod:`unet_tf.modelzoo`).

Every command's options are defined here, once; the same library functions serve the
notebooks. Exit status: 0 success, 1 partly done (images skipped, an export out of
tolerance), 2 a usage or input error, reported in one line without a traceback; 130 or 143
a ``predict`` stopped by SIGINT or SIGTERM (``--resume`` continues it).
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from unet_tf import config

PROG = "python -m unet_tf"


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Option groups that several commands take, each defined once."""

    def group() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(add_help=False)

    model = group()
    model.add_argument(
        "--model",
        type=Path,
        default=config.MODELS_DIR / "unet.keras",
        help="trained model (default: models/unet.keras, trained by `make report`)",
    )
    data = group()
    data.add_argument(
        "--data",
        type=Path,
        default=config.TRAIN_DIR,
        help="labelled images in the Kaggle layout <id>/images, <id>/masks "
        "(default: data/raw/stage1_train)",
    )
    data.add_argument(
        "--validation-ids",
        type=Path,
        default=config.VALIDATION_IDS,
        help="ids of the validation images, never trained on "
        "(default: the committed data/splits/validation_ids.txt)",
    )
    tile = group()
    tile.add_argument(
        "--tile-size", type=int, help="largest inference tile side (default: the tuned one)"
    )
    tile.add_argument("--no-tta", action="store_true", help="skip test-time augmentation")
    tile.add_argument(
        "--nucleus-diameter",
        type=float,
        help="typical nucleus diameter of your images in pixels: they are rescaled to the "
        "training nucleus size (default: estimated from a first pass)",
    )
    tile.add_argument(
        "--no-rescale",
        action="store_true",
        help="predict at the images' own scale, whatever the size of their nuclei",
    )
    overwrite = group()
    overwrite.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    quiet = group()
    quiet.add_argument("--quiet", action="store_true", help="no progress output")
    return {"model": model, "data": data, "tile": tile, "overwrite": overwrite, "quiet": quiet}


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainingConfig` field, with its default and its type."""
    from unet_tf.training import TrainingConfig

    for item in fields(TrainingConfig):
        flag = "--" + item.name.replace("_", "-")
        if item.name == "dataset":
            parser.add_argument(
                "--data",
                "--dataset",
                dest="dataset",
                default=item.default,
                metavar="FOLDER",
                help="dsb2018 (the default), lung_ct, or a folder with images/ and masks/ "
                "(or labels/) of the same file names",
            )
        elif item.type is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=item.default,
                help=f"default: {'on' if item.default else 'off'}",
            )
        else:
            parser.add_argument(
                flag,
                type=item.type,
                default=item.default,
                metavar=item.type.__name__.upper(),
                help=f"default: {item.default}",
            )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command."""
    from unet_tf import export_command, predict_command

    shared = _shared_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="U-Net nucleus segmentation (DSB2018).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    train = commands.add_parser(
        "train",
        parents=[shared["quiet"]],
        help="train the U-Net",
        description="Train the U-Net; the options are the fields of TrainingConfig "
        "(see `unet_tf.training.TrainingConfig` for what each does). A killed run continues "
        "from its last epoch when started again with the same options.",
    )
    _add_config_options(train)
    train.add_argument(
        "--validation-ids",
        type=Path,
        help="ids of the validation images, never trained on (default: the dataset's committed "
        "split, or for a folder of your own a random 15 %% kept beside the model)",
    )
    train.add_argument("--models-dir", type=Path, default=config.MODELS_DIR, help="output folder")
    train.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="continue an interrupted run of the same options",
    )

    evaluate = commands.add_parser(
        "evaluate",
        parents=[shared["model"], shared["data"], shared["tile"], shared["quiet"]],
        help="score a trained model on the validation split",
        description="Score a model on the validation images, overall and per imaging type, "
        "with its tuned settings; --tune chooses them first (as 03-results does) and stores "
        "them beside the model.",
    )
    evaluate.add_argument(
        "--max-images", type=int, default=0, help="validation images to use (0: all)"
    )
    evaluate.add_argument(
        "--tune", action="store_true", help="tune the post-processing and store it"
    )
    evaluate.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    evaluate.add_argument(
        "--csv",
        type=Path,
        help="also write a row per image: its scores and, where the model has a quality "
        "estimate, expected_dsb and reliable",
    )

    predict_command.add_arguments(
        commands.add_parser(
            "predict",
            parents=[shared["model"], shared["tile"], shared["overwrite"], shared["quiet"]],
            help="segment, count and measure nuclei in your own images",
            description="Segment, count and measure nuclei in image files or folders.",
        )
    )
    export_command.add_arguments(
        commands.add_parser(
            "export",
            parents=[shared["model"], shared["overwrite"]],
            help="export a trained model (SavedModel, TFLite, ONNX)",
            description="Export a trained model and check each export against it.",
        )
    )
    return parser


def train_command(args: argparse.Namespace) -> int:
    """``train``: build the config from the options and train."""
    from unet_tf import training

    settings = training.TrainingConfig.from_mapping(vars(args))
    result = training.train(
        settings,
        validation_ids=args.validation_ids,
        models_dir=args.models_dir,
        resume=args.resume,
        verbose=0 if args.quiet else 2,
    )
    best = result.history.iloc[result.best_epoch - 1]
    print(
        f"{result.paths['model']}: {result.epochs_trained} epochs, best {result.best_epoch} "
        f"(validation loss {best['val_loss']:.4f}), {result.training_minutes:.1f} min"
    )
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """``evaluate``: score (and with ``--tune`` first tune) a model on the validation split."""
    import pandas as pd

    from unet_tf import evaluation, files, inference, predict_command, quality, trained

    net, settings, tuned = trained.load_model_and_settings(args.model)
    predict_command.apply_inference_options(settings, args)
    inference.check_tile_size(net, settings["tile_size"])
    samples = evaluation.validation_samples(args.max_images, args.data, args.validation_ids)
    if args.tune:
        record_path = args.model.with_suffix(".json")
        record = trained.read_run_record(record_path) if record_path.is_file() else {}
        tuning = evaluation.tune(
            net,
            samples,
            tile_size=settings["tile_size"],
            tta=settings["tta"],
            nucleus_diameter=None if args.no_rescale else record.get("nucleus_diameter"),
        )
        evaluation.save_tuning(tuning, args.model, settings["tile_size"])
        per_image = tuning.per_image
        chosen = tuning.chosen
        settings.update(
            postprocess=chosen.postprocess,
            tta=chosen.tta,
            rescale=chosen.rescale,
            nucleus_diameter=tuning.nucleus_diameter,
        )
        print(f"tuned: {tuning.chosen.name}; stored in {inference.settings_path(args.model)}")
    else:
        if not tuned:
            print(
                f"note: {inference.settings_path(args.model).name} not found; scoring with "
                "untuned settings (--tune tunes them)",
                file=sys.stderr,
            )
        estimate_path = quality.quality_path(args.model)
        estimate = quality.QualityModel.load(estimate_path) if estimate_path.is_file() else None
        per_image = evaluation.score_model(net, samples, settings, estimate)
        if estimate is not None:
            correlation = per_image.expected_dsb.corr(per_image.dsb_score, method="spearman")
            print(
                f"quality estimate: Spearman {correlation:.3f} between expected and true DSB; "
                f"{int((~per_image.reliable.astype(bool)).sum())} images flagged unreliable"
            )
    numbers = evaluation.headline(per_image)
    table = evaluation.by_type(per_image)
    means = per_image[list(evaluation.SCORE_COLUMNS)].mean()
    counts = per_image[["true_count", "pred_count"]].sum()
    table.loc["all"] = [len(per_image), *means, *counts]
    with pd.option_context("display.precision", 3, "display.width", 120):
        print(table)
    print(
        f"DSB {numbers['dsb_score']:.3f} on {len(per_image)} images (type-balanced "
        f"{numbers['type_balanced_dsb_score']:.3f}); {settings['postprocess']}, "
        f"TTA {settings['tta']}"
    )
    if args.json:
        files.write_json(args.json, {**numbers, "model": str(args.model), **settings})
    if args.csv:
        with files.atomic_path(args.csv) as partial:
            per_image.to_csv(partial, index=False, float_format="%.6g")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns its exit status (2 for a usage or input error)."""
    from unet_tf import export_command, predict_command

    args = build_parser().parse_args(argv)
    handlers = {
        "train": train_command,
        "evaluate": evaluate_command,
        "predict": predict_command.run,
        "export": export_command.run,
    }
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
