"""Run the notebooks in order into ``reports/`` (``make report``).

Each notebook in ``notebooks/`` (``NN-short-name.ipynb``, in name order) is executed with
papermill on the project's ``unet-tf`` Jupyter kernel, with the parameters of a profile
(``notebooks/profiles/<profile>.json``), and written to ``reports/`` as an executed notebook
and as HTML. The run ends with ``reports/summary.md`` (headline numbers and the time each
notebook took) and ``reports/timings.json``. A failing notebook stops the run with a non-zero
exit status and its name, whatever stopped it (an error in a cell, or a kernel that died:
killed, out of memory); its partly executed copy stays in ``reports/`` for inspection.

A second ``make report`` after a successful one does nothing expensive: a notebook is run
again only if it, its parameters, the ``unet_tf`` source, the validation split, the profile
file, ``requirements.txt``, a notebook before it, or one of the files it wrote changed since
its last successful run (``--force`` runs everything). A notebook executes into
``reports/.running/`` and is moved into place when it succeeds, so an interrupted run leaves
the previous report or the new one, never half of one; a failed notebook is kept as
``reports/<name>.failed.ipynb``. Training itself resumes from its last epoch (see
``02-training``).

A profile holds ``parameters`` given to every notebook that declares them, and optional
per-notebook ``overrides``; a parameter that no notebook declares is an error, so a typo
cannot pass silently::

    python -m unet_tf.report --profile smoke

A profile of another dataset also says which ``notebooks`` it runs and a ``reports``
subfolder for its output: ``--profile lung_ct`` runs ``02-training`` and
``06-semantic-results`` on the lung CT slices into ``reports/lung_ct/``, and its model is
``models/lung_ct.keras``, so the DSB2018 reports and model stay as they are.

``--notebooks DIR`` runs the notebooks of another folder (its profiles are in
``DIR/profiles``); the tests use it for small stand-in notebooks.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from unet_tf import config
from unet_tf.files import atomic_path, write_json

NOTEBOOKS_DIR = config.PROJECT_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
REQUIREMENTS = config.PROJECT_ROOT / "requirements.txt"
KERNEL_NAME = "unet-tf"


def profile_path(name: str, profiles_dir: Path = PROFILES_DIR) -> Path:
    """The file of a profile: ``<profiles_dir>/<name>.json``, or ``name`` if it ends in ``.json``.

    Raises
    ------
    FileNotFoundError
        If there is no such profile; the message lists the profiles there are.
    """
    path = Path(name) if name.endswith(".json") else profiles_dir / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in profiles_dir.glob("*.json"))
        raise FileNotFoundError(f"{path}: no such profile; choose one of {known}")
    return path


def load_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> dict:
    """Read ``notebooks/profiles/<name>.json``, or a profile file when ``name`` ends in ``.json``.

    Raises
    ------
    FileNotFoundError
        If there is no such profile; the message lists the profiles there are.
    """
    path = profile_path(name, profiles_dir)
    profile = json.loads(path.read_text())
    profile.setdefault("parameters", {})
    profile.setdefault("overrides", {})
    return profile


def training_config(name: str = "smoke", profiles_dir: Path = PROFILES_DIR):
    """The :class:`~unet_tf.training.TrainingConfig` that ``02-training`` runs with a
    profile: its parameters (with the notebook's overrides) where they are training
    parameters, the defaults elsewhere. The benchmarks' ``--quick`` smoke runs train the
    smoke profile's tiny recipe.

    >>> training_config("smoke").depth
    2
    """
    from unet_tf import training

    profile = load_profile(name, profiles_dir)
    parameters = {**profile["parameters"], **profile["overrides"].get("02-training", {})}
    return training.TrainingConfig.from_mapping(parameters, strict=False)


def notebook_parameters(notebooks: list[Path], profile: dict) -> dict[str, dict]:
    """The parameters each notebook gets from a profile: those it declares, plus overrides.

    Raises
    ------
    ValueError
        If the profile names a parameter no notebook declares, or overrides a notebook that
        does not exist or a parameter that notebook does not declare.
    """
    import papermill

    declared = {nb.stem: set(papermill.inspect_notebook(str(nb))) for nb in notebooks}
    unknown = set(profile["parameters"]) - set().union(*declared.values())
    if unknown:
        raise ValueError(f"profile parameters that no notebook declares: {sorted(unknown)}")
    chosen = {}
    for name, names in declared.items():
        chosen[name] = {k: v for k, v in profile["parameters"].items() if k in names}
    for name, overrides in profile["overrides"].items():
        if name not in declared:
            raise ValueError(f"profile overrides notebook {name!r}, which does not exist")
        extra = set(overrides) - declared[name]
        if extra:
            raise ValueError(f"profile overrides {sorted(extra)} that {name} does not declare")
        chosen[name].update(overrides)
    return chosen


def ensure_kernel() -> None:
    """Register the ``unet-tf`` kernel in this environment if it is not there yet."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        install(kernel_name=KERNEL_NAME, display_name="Python (unet-tf)", prefix=sys.prefix)


def to_html(notebook_path: Path, html_path: Path) -> None:
    """Convert an executed notebook to a standalone HTML page, atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(notebook_path, as_version=4))
    with atomic_path(html_path) as partial:
        partial.write_text(body, encoding="utf-8")


def summary_markdown(profile_name: str, timings: dict[str, float], reports_dir: Path) -> str:
    """The text of ``reports/summary.md``."""
    lines = [f"# Report summary (profile `{profile_name}`)", ""]
    metrics_path = reports_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    if metrics is not None and "hausdorff_95" in metrics:
        lines += [
            f"Validation images of `{metrics['model']}` ({metrics['images']}, never trained on):",
            "",
            "| Dice | IoU | Hausdorff (px) | HD95 (px) |",
            "|---|---|---|---|",
            f"| {metrics['dice']:.4f} | {metrics['iou']:.4f} | {metrics['hausdorff']:.1f} "
            f"| {metrics['hausdorff_95']:.1f} |",
            "",
        ]
    elif metrics is not None:
        lines += [
            "Validation split of stage1_train "
            f"({metrics['validation_images']} images, never trained on):",
            "",
            "| DSB score | pixel IoU | Dice | epochs trained | training minutes |",
            "|---|---|---|---|---|",
            f"| {metrics['dsb_score']:.3f} | {metrics['pixel_iou']:.3f} | {metrics['dice']:.3f} "
            f"| {metrics['epochs_trained']} | {metrics['training_minutes']:.1f} |",
            "",
        ]
        by_type = metrics.get("by_imaging_type", {})
        if by_type:
            lines += ["| imaging type | images | DSB score | F1 at IoU 0.5 |", "|---|---|---|---|"]
            lines += [
                f"| {kind} | {row['images']} | {row['dsb_score']:.3f} | {row['f1']:.3f} |"
                for kind, row in by_type.items()
            ]
            if "type_balanced_dsb_score" in metrics:
                balanced = metrics["type_balanced_dsb_score"]
                lines += [f"| type-balanced mean | | {balanced:.3f} | |"]
            lines += [""]
        lines += [
            f"Post-processing: `{metrics['postprocess']}`, TTA: {metrics['tta']}, automatic "
            f"rescaling: {metrics.get('rescale', False)}.",
            "",
        ]
    submission = reports_dir / "submission.csv"
    if submission.is_file():
        rows = submission.read_text().count("\n") - 1
        lines += [f"`submission.csv`: {rows} rows.", ""]
    lines += ["| notebook | minutes |", "|---|---|"]
    lines += [f"| {name} | {seconds / 60:.1f} |" for name, seconds in timings.items()]
    lines += [f"| **total** | **{sum(timings.values()) / 60:.1f}** |", ""]
    return "\n".join(lines)


STAMPS_FILE = ".stamps.json"


def source_digest() -> str:
    """A digest of the ``unet_tf`` source: a change to the module reruns every notebook."""
    digest = hashlib.sha256()
    for path in sorted((config.PROJECT_ROOT / "unet_tf").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    # A missing file is a state of its own: creating it later must change the digest too.
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def inputs_digest(profile_file: Path) -> str:
    """A digest of what every notebook depends on besides itself and its parameters.

    That is the ``unet_tf`` source, the validation split (``config.VALIDATION_IDS``), the
    profile file and ``requirements.txt``: a change to any of them reruns every notebook,
    which is simpler and safer than tracking which notebook reads which.
    """
    parts = {
        "source": source_digest(),
        "validation_ids": _file_digest(config.VALIDATION_IDS),
        "profile": _file_digest(profile_file),
        "requirements": _file_digest(REQUIREMENTS),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def notebook_stamp(notebook: Path, parameters: dict, upstream: str, inputs: str) -> str:
    """What a notebook's result depends on: itself, its parameters, earlier notebooks, and
    the shared inputs (``inputs``, from :func:`inputs_digest`)."""
    digest = hashlib.sha256(notebook.read_bytes())
    for part in (json.dumps(parameters, sort_keys=True), upstream, inputs):
        digest.update(part.encode())
    return digest.hexdigest()


def _facts(path: Path) -> list[int]:
    """Size and modification time: what tells that a file was written again."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _files_under(folders) -> dict[str, list]:
    found = {}
    for folder in folders:
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and ".running" not in path.parts:
                    found[str(path)] = _facts(path)
    return found


def _products(before: dict, after: dict) -> dict[str, list]:
    """Files created or changed while a notebook ran (its outputs)."""
    return {path: facts for path, facts in after.items() if before.get(path) != facts}


def _chain(record: dict) -> str:
    """What later notebooks depend on: this one's stamp and the files it wrote."""
    text = record["stamp"] + json.dumps(record["products"], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _up_to_date(record: dict | None, stamp: str) -> bool:
    if not record or record.get("stamp") != stamp:
        return False
    for path, facts in record.get("products", {}).items():
        current = Path(path)
        if not current.is_file() or _facts(current) != facts:
            return False
    return True


def kernel_config():
    """Jupyter configuration for the notebook kernels: CurveZMQ-encrypted connections.

    The kernel and papermill talk over local TCP sockets. Unencrypted, every kernel prints
    "Kernel is running over TCP without encryption" (ipykernel) into ``make report``'s
    output. The ``unet-tf`` kernelspec declares Curve support, so the kernel manager can
    hand the kernel keys; ``"auto"`` falls back to plain TCP (and the warning) for a
    kernelspec that does not declare it, rather than failing.
    """
    import zmq
    from traitlets.config import Config

    settings = Config()
    if zmq.has("curve"):
        settings.KernelManager.transport_encryption = "auto"
    return settings


def _describe(error: BaseException) -> str:
    """One line saying why a notebook stopped, for the ``[report] FAILED`` message."""
    import papermill
    from nbclient.exceptions import DeadKernelError

    if isinstance(error, papermill.PapermillExecutionError):
        return f"{error.ename}: {error.evalue}"
    if isinstance(error, DeadKernelError):
        return "the Jupyter kernel died: killed, or out of memory?"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _keep_failed(partial: Path, failed: Path) -> str:
    """Move a failed notebook's partial copy to ``failed``; say where it is, or that there
    is none (papermill had not written it yet)."""
    failed.unlink(missing_ok=True)  # A copy from an earlier failure would mislead.
    if partial.is_file():
        os.replace(partial, failed)
        return f"its partly executed copy is {failed}"
    return "papermill wrote no partly executed copy"


def in_default_run(notebook: Path) -> bool:
    """Whether ``make report`` runs a notebook unasked.

    Interactive notebooks (``05-viewer``) say ``"unet_tf": {"report": false}`` in their
    metadata: they run only when named with ``--only`` (the tests smoke-run them so).
    """
    metadata = json.loads(notebook.read_text()).get("metadata", {})
    return bool(metadata.get("unet_tf", {}).get("report", True))


def run(
    profile_name: str,
    only: list[str] | None = None,
    force: bool = False,
    notebooks_dir: Path = NOTEBOOKS_DIR,
) -> int:
    """Execute the notebooks of ``notebooks_dir`` with a profile; return the exit status.

    The status is 0 when every notebook succeeded (or was up to date), 1 when one failed
    (an error in a cell, a kernel that died, anything else that stopped it), 130 when the
    run was interrupted with Ctrl-C. Raises ``FileNotFoundError`` or ``ValueError`` for a
    missing notebooks folder, an unknown profile or notebook, or a bad profile.
    """
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"{notebooks_dir}: no such notebooks folder")
    profile_file = profile_path(profile_name, notebooks_dir / "profiles")
    profile = load_profile(str(profile_file))
    reports_dir = config.REPORTS_DIR
    if profile.get("reports"):
        # A profile of another dataset keeps its reports apart, figures and metrics included:
        # the kernels inherit the variable, and config reads it on every access.
        reports_dir = reports_dir / profile["reports"]
        os.environ["UNET_TF_REPORTS_DIR"] = str(reports_dir)
    notebooks = sorted(notebooks_dir.glob("[0-9][0-9]-*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"{notebooks_dir}: no notebooks named NN-name.ipynb")
    parameters = notebook_parameters(notebooks, profile)
    if only:
        missing = set(only) - {nb.stem for nb in notebooks}
        if missing:
            raise ValueError(f"no such notebooks: {sorted(missing)}")
        notebooks = [nb for nb in notebooks if nb.stem in only]
    elif profile.get("notebooks"):
        missing = set(profile["notebooks"]) - {nb.stem for nb in notebooks}
        if missing:
            raise ValueError(f"profile {profile_name!r} names no such notebooks: {sorted(missing)}")
        notebooks = [nb for nb in notebooks if nb.stem in profile["notebooks"]]
    else:
        notebooks = [nb for nb in notebooks if in_default_run(nb)]
    # Imported here, after the quick checks above: it takes seconds.
    import papermill

    ensure_kernel()
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamps_path = reports_dir / STAMPS_FILE
    stamps = json.loads(stamps_path.read_text()) if stamps_path.is_file() else {}
    stamps = stamps if stamps.get("profile") == profile_name else {}
    records = stamps.setdefault("notebooks", {})
    stamps["profile"] = profile_name
    inputs = inputs_digest(profile_file)
    timings_path = reports_dir / "timings.json"
    previous = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings = dict(previous.get("seconds", {})) if previous.get("profile") == profile_name else {}
    running = reports_dir / ".running"
    upstream = ""
    try:
        for notebook in notebooks:
            output = reports_dir / notebook.name
            stamp = notebook_stamp(notebook, parameters[notebook.stem], upstream, inputs)
            if not force and _up_to_date(records.get(notebook.stem), stamp):
                print(
                    f"[report] {notebook.stem} is up to date (--force to run it again)", flush=True
                )
                upstream = _chain(records[notebook.stem])
                continue
            records.pop(notebook.stem, None)
            print(f"[report] {notebook.stem} {parameters[notebook.stem]}", flush=True)
            running.mkdir(exist_ok=True)
            partial = running / notebook.name
            watched = (config.MODELS_DIR, reports_dir)
            before = _files_under(watched)
            started = time.monotonic()
            # Whatever stops a notebook (an error in a cell, a kernel killed by the
            # out-of-memory killer, a failed HTML conversion, Ctrl-C) ends the same way:
            # one line naming it, the partial copy kept, no traceback of papermill's insides.
            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(partial),
                    parameters=parameters[notebook.stem],
                    kernel_name=KERNEL_NAME,
                    cwd=str(notebook.parent),
                    progress_bar=False,
                    config=kernel_config(),
                )
                seconds = time.monotonic() - started
                to_html(partial, output.with_suffix(".html"))
            except (Exception, KeyboardInterrupt) as error:
                where = _keep_failed(partial, output.with_name(f"{notebook.stem}.failed.ipynb"))
                print(
                    f"[report] FAILED: notebook {notebook.stem} ({_describe(error)}); {where}",
                    file=sys.stderr,
                    flush=True,
                )
                write_json(stamps_path, stamps)
                return 130 if isinstance(error, KeyboardInterrupt) else 1
            timings[notebook.stem] = seconds
            os.replace(partial, output)
            output.with_name(f"{notebook.stem}.failed.ipynb").unlink(missing_ok=True)
            products = _products(before, _files_under(watched))
            records[notebook.stem] = {"stamp": stamp, "products": products}
            upstream = _chain(records[notebook.stem])
            write_json(stamps_path, stamps)
            print(f"[report] {notebook.stem} done in {seconds / 60:.1f} min", flush=True)
    finally:
        # Nothing in .running/ is worth keeping once the run ends, however it ends.
        shutil.rmtree(running, ignore_errors=True)
    write_json(timings_path, {"profile": profile_name, "seconds": timings})
    with atomic_path(reports_dir / "summary.md") as partial:
        partial.write_text(summary_markdown(profile_name, timings, reports_dir))
    total = sum(timings.values()) / 60
    print(f"[report] all done in {total:.1f} min; see {reports_dir}/summary.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile", default="full", help="a name in notebooks/profiles/ or a .json file"
    )
    parser.add_argument("--only", nargs="*", help="run only these notebooks (by stem)")
    parser.add_argument(
        "--force", action="store_true", help="run every notebook, even those up to date"
    )
    parser.add_argument(
        "--notebooks",
        type=Path,
        default=NOTEBOOKS_DIR,
        help="the folder of NN-name.ipynb notebooks to run (default: notebooks/)",
    )
    args = parser.parse_args(argv)
    try:
        return run(args.profile, args.only, force=args.force, notebooks_dir=args.notebooks)
    except (FileNotFoundError, ValueError) as error:
        print(f"make report: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
