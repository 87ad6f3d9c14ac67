"""Ablation of the generalization pieces: each one turned off in turn, same budget.

Trains the default recipe and, for each piece of the generalization work, the default with
that piece set back to its previous value (RGB input, no zoom, no colour augmentation, no
tissue augmentation, no balanced sampling, the plateau schedule), then all of them together
(the previous recipe).
Every recipe gets the same number of training steps (not minutes: a budget in steps does not
depend on what else the CPU runs, and the cosine schedule follows it), the same seed and
the same training split; each is tuned
on the validation split as ``03-results`` does (without TTA, to keep the benchmark short)
and scored there overall, per imaging type and as the type-balanced mean. The default
recipe is also scored without the automatic rescaling at inference.

The budget is shorter than ``make report``'s, so the numbers are lower than its; what
counts is the difference between rows. Writes ``reports/ablation.json`` and prints a
Markdown table::

    .venv/bin/python benchmarks/ablation.py [--epochs 7] [--reuse] [--only default ...]

``--quick`` is a smoke run (the tests use it): every recipe with the training parameters of
the smoke profile (``notebooks/profiles/smoke.json``: a tiny U-Net, a few images, two epochs
of two steps), into ``reports/ablation-quick.json`` and ``models/ablation-quick/``, so
that it never mixes with the real table.
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

from unet_tf import config, evaluation, files, report, training

# Each piece and the value that turns it off (the defaults up to commit b04157f).
PIECES = {
    "RGB input instead of nuclei_bright": {"representation": "rgb"},
    "no zoom": {"max_scale": 1.0},
    "no colour augmentation": {"colour_augmentation": 0.0},
    "no tissue augmentation": {"tissue_augmentation": 0.0},
    "no balanced sampling": {"balance": 0.0},
    "plateau schedule instead of cosine": {"schedule": "plateau"},
}
RECIPES = {
    "default": {},
    **{f"default, {name}": change for name, change in PIECES.items()},
    "previous (all pieces off)": {k: v for change in PIECES.values() for k, v in change.items()},
}
# Run unless --only names others: the previous recipe is compared with the default, at a
# longer budget, by ``make report`` and ``benchmarks/generalization.py``.
DEFAULT_RUN = [name for name in RECIPES if not name.startswith("previous")]
# No time limit: the budget is the number of steps.
NO_TIME_LIMIT = 24 * 60.0
TYPES = ("fluorescence", "stained", "brightfield")


def row_of(name: str, rescaling: bool, per_image: pd.DataFrame, epochs: int, minutes: float):
    """One table row: overall, type-balanced and per-type DSB of one recipe."""
    head = evaluation.headline(per_image)
    row = {
        "recipe": name,
        "automatic rescaling": "on" if rescaling else "off",
        "epochs": epochs,
        "minutes": minutes,
        "DSB": head["dsb_score"],
        "type-balanced": head["type_balanced_dsb_score"],
    }
    for kind in TYPES:
        row[kind] = head["by_imaging_type"].get(kind, {}).get("dsb_score", float("nan"))
    row["F1@0.5"] = head["f1_at_0.5"]
    return row


def unscaled_results(tuning: evaluation.Tuning) -> pd.DataFrame:
    """The per-image results of the chosen model and post-processing without the rescaling.

    They are those of the step the rescaling row was made from, which need not be the last
    step: tuned connected components can beat the watershed of an under-trained model.
    """
    chosen = tuning.chosen
    (step,) = [
        step
        for step in tuning.steps
        if not step.rescale and (step.tta, step.postprocess) == (chosen.tta, chosen.postprocess)
    ][-1:]
    return tuning.results[step.name]


def run(
    name: str,
    change: dict,
    epochs: int,
    models_dir: Path,
    max_images: int,
    reuse: bool,
    base: training.TrainingConfig | None = None,
):
    """Train one recipe, ``base`` (by default the default recipe) with ``change`` (or, with
    ``reuse``, take the model of a finished run of it), tune it on the validation split, and
    return its table rows."""
    recipe = replace(
        base or training.TrainingConfig(),
        **change,
        epochs=epochs,
        max_minutes=NO_TIME_LIMIT,
        max_images=max_images,
        model_name="ablation-" + "".join(c if c.isalnum() else "-" for c in name.lower()),
    )
    model, record = training.train_or_reuse(recipe, models_dir, reuse)
    samples = evaluation.validation_samples(max_images)
    tuning = evaluation.tune(
        model, samples, tta=False, nucleus_diameter=record.get("nucleus_diameter")
    )
    trained = record["epochs_trained"], round(record["training_minutes"], 1)
    rows = [row_of(name, tuning.chosen.rescale, tuning.per_image, *trained)]
    if tuning.chosen.rescale:
        rows.append(row_of(name, False, unscaled_results(tuning), *trained))
    for row in rows:
        row["post-processing"] = tuning.chosen.postprocess["method"]
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, help="epochs per recipe (the budget; default 7, or the smoke's)"
    )
    parser.add_argument("--only", nargs="*", choices=list(RECIPES), help="recipes to run")
    parser.add_argument(
        "--max-images", type=int, help="images per split (default all, or the smoke's)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="score models of finished runs again, untrained"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: the smoke profile's tiny recipe"
    )
    args = parser.parse_args(argv)

    base = report.training_config("smoke") if args.quick else training.TrainingConfig()
    if args.epochs is None:
        args.epochs = base.epochs if args.quick else 7
    if args.max_images is None:
        args.max_images = base.max_images
    stem = "ablation-quick" if args.quick else "ablation"
    models_dir = config.MODELS_DIR / stem
    output = config.REPORTS_DIR / f"{stem}.json"
    # Rows of earlier runs of other recipes are kept, so the table can be built in parts.
    previous = json.loads(output.read_text()) if output.exists() else {}
    rows = [r for r in previous.get("rows", []) if previous.get("epochs") == args.epochs]
    for name in args.only or DEFAULT_RUN:
        rows = [r for r in rows if r["recipe"] != name]
        rows += run(name, RECIPES[name], args.epochs, models_dir, args.max_images, args.reuse, base)
        files.write_json(output, {"epochs": args.epochs, "rows": rows})
        print(f"{name}: done", flush=True)
    order = {name: i for i, name in enumerate(RECIPES)}
    rows.sort(key=lambda r: (order.get(r["recipe"], len(order)), r["automatic rescaling"] == "off"))
    print(evaluation.markdown_table(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
