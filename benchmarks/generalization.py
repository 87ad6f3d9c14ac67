"""Generalization check: hold out whole groups of similar images, train on the rest, score them.

The validation split looks like the training set (its images come from the same sources),
so a gain there need not carry to images the project has never seen. This benchmark holds
out whole *groups* instead: all images of one imaging type and one size, which in DSB2018
is one source (one microscope, stain and magnification). Each recipe (the one before the
generalization work, the default before the tissue augmentation, and the default) is
trained, in the same shorter budget, on stage1_train without the held-out groups (and
without the validation split, on which its post-processing is tuned as ``03-results``
does), then scored on every image of each held-out group.

The models stay in ``models/generalization/`` with their tuned settings (for
``benchmarks/scale_check.py --model``, say). By default one group of each imaging type is
held out: for each type, the largest group of at most ``--largest`` images (so that holding
it out leaves most of that type's other sources in training), or the smallest there is.
Writes ``reports/generalization.json`` and prints a Markdown table::

    .venv/bin/python benchmarks/generalization.py [--minutes 15] [--groups "stained 320x256"]

The held-out stained images are also scored enlarged 2x and 3x (bilinear, labels by
nearest neighbour; ``--enlarge``): the stained tissue of stage1_test and of other sets is
at a higher magnification than stage1_train's, and the model must find nuclei it never saw
in a stain it never saw at a size it never saw.

``--candidate NAME=VALUE ...`` adds a recipe, the default with some parameters changed,
trained and scored the same way: how a new piece is judged before it becomes the default
(``--reuse`` then scores the finished recipes again and trains only the new one).

``--quick`` is a smoke run (the tests use it): every recipe with the training parameters of
the smoke profile (``notebooks/profiles/smoke.json``: a tiny U-Net, a few images, two epochs
of two steps), tuned on as few validation images, into ``reports/generalization-quick.json``
and ``models/generalization-quick/``, so that it never mixes with the real results.
"""

import argparse
import sys
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

import pandas as pd

from unet_tf import config, data, evaluation, files, inference, report, training

# The recipe before the generalization work (the defaults up to commit b04157f).
PREVIOUS = {
    "representation": "rgb",
    "max_scale": 1.0,
    "colour_augmentation": 0.0,
    "tissue_augmentation": 0.0,
    "balance": 0.0,
    "schedule": "plateau",
}
# The default from commit dae8507 until the tissue augmentation was switched on.
BEFORE_TISSUE = {"tissue_augmentation": 0.0}
# The current default (every piece of the generalization work on): no overrides.
DEFAULT = {}
# Name, training parameters and whether images are rescaled at inference, in table order.
RECIPES = [
    ("previous", PREVIOUS, False),
    ("before-tissue", BEFORE_TISSUE, True),
    ("default", DEFAULT, True),
]
# Magnifications at which the held-out groups of these imaging types are scored as well.
ENLARGED_TYPES = ("stained",)
ENLARGEMENTS = (2.0, 3.0)


def source_groups(index: pd.DataFrame) -> pd.Series:
    """The group of each image: its imaging type and size, e.g. ``stained 512x640``."""
    sizes = index.width.astype(str) + "x" + index.height.astype(str)
    return index.imaging_type + " " + sizes


def choose_groups(index: pd.DataFrame, largest: int, smallest: int = 3) -> list[str]:
    """One group per imaging type: the largest with ``smallest`` to ``largest`` images, or,
    where every group of the type is larger, the smallest (in stage1_train all stained
    images are one group: holding it out leaves no stained image in training)."""
    counts = index.group.value_counts()
    chosen = []
    for kind in sorted(index.imaging_type.unique()):
        sizes = counts[[g for g in counts.index if g.startswith(kind + " ")]]
        sizes = sizes[sizes >= smallest]
        eligible = sizes[sizes <= largest]
        if len(eligible):
            chosen.append(eligible.index[0])
        elif len(sizes):
            chosen.append(sizes.index[-1])
    return chosen


def parse_overrides(items: list[str]) -> dict:
    """Training parameters from ``NAME=VALUE`` strings, typed as ``TrainingConfig`` has them.

    Raises
    ------
    ValueError
        For an item without ``=``, an unknown name or a value of the wrong type.
    """
    types = {item.name: item.type for item in fields(training.TrainingConfig)}
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in types:
            raise ValueError(f"{item!r} is not NAME=VALUE with a TrainingConfig parameter")
        kind = types[name]
        try:
            if kind is bool:
                # A mistyped flag must not read as False.
                overrides[name] = {"true": True, "1": True, "false": False, "0": False}[
                    value.lower()
                ]
            else:
                overrides[name] = kind(value)
        except (KeyError, ValueError):
            raise ValueError(f"{name} must be {kind.__name__}, got {value!r}") from None
    replace(training.TrainingConfig(), **overrides)  # Checks ranges.
    return overrides


def group_type(group: str) -> str:
    """The imaging type of a group named by :func:`source_groups`."""
    return group.split(" ")[0]


def enlarged_group(group: str, factor: float) -> str:
    """The name of a held-out group scored at ``factor`` times its size."""
    return f"{group} at {factor:g}x"


def score_enlarged(model, samples, settings, groups: pd.Series, factors) -> pd.DataFrame:
    """Per-image scores of ``samples`` enlarged by each factor, one image at a time (3x a
    1024-pixel image is large); the group column names the factor."""
    frames = []
    for factor in factors:
        for sample in samples:
            (scaled,) = inference.resample_samples([sample], factor)
            frame = evaluation.score_model(model, [scaled], settings)
            frame["group"] = enlarged_group(groups[sample[0]], factor)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run_recipe(
    name,
    settings,
    rescale,
    minutes,
    held_out,
    validation_file,
    models_dir,
    max_images,
    reuse,
    enlargements=ENLARGEMENTS,
    base=None,
    scored_ids=None,
):
    """Train one recipe, ``base`` (by default the default recipe) with ``settings``,
    without the held-out images, tune it, and score it per group.

    With ``rescale`` images are rescaled at inference to the training nucleus size. With
    ``reuse`` a model a finished run of the same recipe left is scored again instead. The
    held-out groups of ``ENLARGED_TYPES`` are scored again at each of ``enlargements``.
    ``scored_ids`` are the held-out images scored (by default all).
    """
    base = base or training.TrainingConfig()
    recipe = replace(base, **settings, max_minutes=minutes, model_name=name)
    excluded = list(held_out.index)
    model, record = training.train_or_reuse(
        recipe, models_dir, reuse, validation_ids=validation_file, exclude_ids=excluded
    )
    paths = recipe.paths(models_dir)
    diameter = record.get("nucleus_diameter") if rescale else None
    validation = evaluation.validation_samples(max_images, ids_path=validation_file)
    tuning = evaluation.tune(model, validation, tta=False, nucleus_diameter=diameter)
    # The tuned settings go beside the model, so that predict and the scale check use it.
    evaluation.save_tuning(tuning, paths["model"], tile_size=1024, record=record)
    settings_used = {
        "postprocess": tuning.chosen.postprocess,
        "tta": False,
        "tile_size": 1024,
        "rescale": tuning.chosen.rescale,
        "nucleus_diameter": diameter,
    }
    samples = data.load_samples(
        config.TRAIN_DIR,
        ids=list(held_out.index if scored_ids is None else scored_ids),
        cache_dir=config.LABEL_CACHE,
    )
    scores = evaluation.score_model(model, samples, settings_used)
    scores["group"] = held_out.loc[scores.image_id].to_numpy()
    enlarged = [s for s in samples if group_type(held_out[s[0]]) in ENLARGED_TYPES]
    if enlarged and enlargements:
        extra = score_enlarged(model, enlarged, settings_used, held_out, enlargements)
        scores = pd.concat([scores, extra], ignore_index=True)
    return {
        "recipe": asdict(recipe),
        "epochs": record["epochs_trained"],
        "best_epoch": record["best_epoch"],
        "minutes": round(record["training_minutes"], 1),
        "validation": evaluation.headline(tuning.per_image),
        "groups": scores.groupby("group")[["dsb_score", "f1"]].mean().to_dict(orient="index"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, help="training budget per recipe (default 15, or the smoke's)"
    )
    parser.add_argument("--groups", nargs="*", help="groups to hold out (default: one per type)")
    parser.add_argument("--largest", type=int, default=40, help="largest group chosen by default")
    parser.add_argument(
        "--max-images", type=int, help="validation images (default all, or the smoke's)"
    )
    parser.add_argument(
        "--enlarge",
        type=float,
        nargs="*",
        default=list(ENLARGEMENTS),
        help=f"factors at which held-out {'/'.join(ENLARGED_TYPES)} images are scored too",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="score models of finished runs again, untrained"
    )
    parser.add_argument(
        "--candidate",
        nargs="+",
        action="append",
        metavar="NAME=VALUE",
        help="one more recipe: the default with these training parameters changed "
        "(e.g. tissue_augmentation=1.0); trained even with --reuse unless it has finished; "
        "give it again for more recipes (candidate-2, ...)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        metavar="RECIPE",
        help=f"run only these of {[name for name, _, _ in RECIPES]} (the candidates always run)",
    )
    parser.add_argument(
        "--max-scored",
        type=int,
        help="held-out images scored per group (default all, or the smoke's max_images); "
        "the whole group is held out all the same",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: the smoke profile's tiny recipe"
    )
    args = parser.parse_args(argv)
    base = report.training_config("smoke") if args.quick else training.TrainingConfig()
    if args.minutes is None:
        args.minutes = base.max_minutes if args.quick else 15.0
    if args.max_images is None:
        args.max_images = base.max_images
    if args.max_scored is None:
        args.max_scored = base.max_images
    stem = "generalization-quick" if args.quick else "generalization"
    try:
        candidates = [parse_overrides(items) for items in args.candidate or []]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    known = [name for name, _, _ in RECIPES]
    if set(args.only or []) - set(known):
        print(f"error: --only takes recipes of {known}", file=sys.stderr)
        return 2

    index = data.build_index(config.TRAIN_DIR, cache_dir=config.LABEL_CACHE)
    index["group"] = source_groups(index)
    groups = args.groups or choose_groups(index, args.largest)
    unknown = sorted(set(groups) - set(index.group))
    if unknown:
        print(f"error: no such groups {unknown}; see the group column", file=sys.stderr)
        return 2
    held_out = index[index.group.isin(groups)].set_index("image_id").group
    print(f"holding out {len(held_out)} images: {held_out.value_counts().to_dict()}", flush=True)
    # The first images of each group (in id order) when not all are scored.
    scored = held_out.groupby(held_out, sort=False).head(args.max_scored or len(held_out))

    results = {}
    models_dir = config.MODELS_DIR / stem
    with tempfile.TemporaryDirectory() as folder:
        # The held-out groups leave the validation split too: no model may see them.
        validation_file = Path(folder) / "validation_ids.txt"
        kept = [i for i in data.load_ids(config.VALIDATION_IDS) if i not in held_out.index]
        data.save_ids(validation_file, kept, header="validation split without held-out groups")
        recipes = [r for r in RECIPES if args.only is None or r[0] in args.only]
        for number, candidate in enumerate(candidates, start=1):
            name = "candidate" if number == 1 else f"candidate-{number}"
            recipes.append((name, candidate, True))
        for name, settings, rescale in recipes:
            results[name] = run_recipe(
                f"generalization-{name}",
                settings,
                rescale,
                args.minutes,
                held_out,
                validation_file,
                models_dir,
                args.max_images,
                args.reuse,
                args.enlarge,
                base,
                scored.index,
            )
            print(f"{name}: {results[name]['groups']}", flush=True)

    rows = []
    names = [
        (group, enlarged_group(group, factor) if factor else group)
        for group in groups
        for factor in [None, *(args.enlarge if group_type(group) in ENLARGED_TYPES else [])]
    ]
    for group, name in names:
        row = {"held-out group": name, "images": int((scored == group).sum())}
        for recipe, result in results.items():
            row[f"{recipe} DSB"] = result["groups"][name]["dsb_score"]
            row[f"{recipe} F1@0.5"] = result["groups"][name]["f1"]
        rows.append(row)
    for name in ("dsb_score", "type_balanced_dsb_score"):
        row = {"held-out group": f"validation split (without the groups): {name}", "images": ""}
        for recipe, result in results.items():
            row[f"{recipe} DSB"] = result["validation"][name]
        rows.append(row)
    print(evaluation.markdown_table(pd.DataFrame(rows)))
    files.write_json(
        config.REPORTS_DIR / f"{stem}.json",
        {
            "minutes": args.minutes,
            "groups": groups,
            "candidates": candidates,
            "results": results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
