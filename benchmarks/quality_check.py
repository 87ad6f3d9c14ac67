"""Quality check: does the confidence per nucleus and the expected score per image hold on
images the model never saw?

Every labelled image the model never trained on is predicted with TTA and without: its
validation split (without the held-out groups) and, for a model of
``benchmarks/generalization.py``, every image of the groups held out of its training. Per
nucleus, the features of :mod:`unet_tf.quality` and whether it matches a true nucleus at IoU
0.5; per image, its features and its true DSB score.

The estimate is judged source by source (leave one group out: fitted on every other group,
scored on the one left out, so no image is scored by an estimate fitted on its own source):
the Spearman correlation of expected and true DSB per image, how much lower the images
flagged unreliable score than the others, and the ROC AUC of the confidence for matched
against unmatched nuclei. Then it is fitted on all the images and saved beside the model
(``<model>.quality.json``), which ``predict`` reads. Writes ``reports/quality_check.json``::

    .venv/bin/python benchmarks/quality_check.py \
        --model models/generalization/generalization-default.keras
"""

import argparse
import sys
from pathlib import Path

import pandas as pd
from generalization import source_groups

from unet_tf import config, data, evaluation, files, quality, trained


def held_out_groups(model_path: Path) -> list[str]:
    """The groups a model of the generalization check was trained without (none for
    another model)."""
    import json

    # generalization.py keeps its models in models/<stem>/ and its record in reports/<stem>.json.
    stem = Path(model_path).parent.name
    record = config.REPORTS_DIR / f"{stem}.json"
    if not stem.startswith("generalization") or not record.is_file():
        return []
    return json.loads(record.read_text())["groups"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=config.MODELS_DIR / "unet.keras")
    parser.add_argument("--threshold", type=float, default=0.3, help="expected DSB below: flagged")
    parser.add_argument("--max-images", type=int, default=0, help="per group (0: all)")
    parser.add_argument("--features", type=Path, help="reuse the features written by a run")
    args = parser.parse_args(argv)

    net, settings, _ = trained.load_model_and_settings(args.model)
    held_out = held_out_groups(args.model)
    index = data.build_index(config.TRAIN_DIR, cache_dir=config.LABEL_CACHE)
    index["group"] = source_groups(index)
    groups = index.set_index("image_id").group
    validation = [i for i in data.load_ids(config.VALIDATION_IDS) if groups[i] not in held_out]
    ids = validation + list(groups[groups.isin(held_out)].index)
    if args.max_images:
        chosen = pd.Series(groups[ids].to_numpy(), index=ids)
        ids = list(chosen.groupby(chosen, sort=False).head(args.max_images).index)
    stem = config.INTERIM_DIR / "quality" / args.model.stem
    if args.features:
        nuclei = pd.read_csv(f"{args.features}-nuclei.csv")
        images = pd.read_csv(f"{args.features}-images.csv")
    else:
        samples = data.load_samples(config.TRAIN_DIR, ids=ids, cache_dir=config.LABEL_CACHE)
        nuclei, images = quality.collect(net, samples, settings, groups)
        stem.parent.mkdir(parents=True, exist_ok=True)
        nuclei.to_csv(f"{stem}-nuclei.csv", index=False)
        images.to_csv(f"{stem}-images.csv", index=False)
    images["held_out"] = images.group.isin(held_out)

    judged = quality.judge(nuclei, images, args.threshold)
    results = {}
    for tta in (True, False):
        for part, chosen in (("held-out groups", True), ("validation split", False)):
            rows = judged[(judged.tta == tta) & (judged.held_out == chosen)]
            if rows.empty:
                continue
            mine = nuclei[(nuclei.tta == tta) & nuclei.image.isin(rows.image)]
            results[f"{part}, {'TTA' if tta else 'no TTA'}"] = quality.numbers(
                rows, mine, args.threshold
            )
    table = pd.DataFrame(results).T
    print(evaluation.markdown_table(table.reset_index(names="images of")))

    fitted = quality.fit(
        nuclei,
        images,
        args.threshold,
        fitted_on={"images": int(images.image.nunique()), "groups": sorted(images.group.unique())},
    )
    fitted.save(quality.quality_path(args.model))
    files.write_json(
        config.REPORTS_DIR / "quality_check.json",
        {"model": str(args.model), "held_out": held_out, "results": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
