"""Own data: folder datasets (images/ + masks/ or labels/), CT windows, fine-tuning, lung CT."""

import json
import re
import zipfile
from dataclasses import asdict, replace

import numpy as np
import pytest
import tifffile
from conftest import TINY_TRAINING, disc, disc_labels, run_report
from PIL import Image

from unet_tf import config, data, datasets, fetch, report, training
from unet_tf.cli import main as cli

TINY = {**TINY_TRAINING, "epochs": 1, "steps_per_epoch": 1, "jit_compile": False}
SHAPE = (48, 64)


def make_folder(root, count=4, kind="binary", mask_folder="masks"):
    """A folder dataset of ``count`` images with two discs each.

    ``kind``: ``binary`` (8-bit PNG masks of 0/255), ``instances`` (16-bit TIFF label
    images, PNG images), or ``ct`` (signed 16-bit TIFF images in Hounsfield units with 0/1
    TIFF masks, as the lung CT slices are).
    """
    (root / "images").mkdir(parents=True)
    (root / mask_folder).mkdir()
    for index in range(count):
        stem = f"ID_{index:04d}_Z_0001"
        labels = disc_labels(SHAPE, [((14, 16 + index), 8), ((30, 44), 9)])
        if kind == "ct":
            image = np.where(labels > 0, -800, 40).astype(np.int16)
            tifffile.imwrite(root / "images" / f"{stem}.tif", image)
            tifffile.imwrite(root / mask_folder / f"{stem}.tif", (labels > 0).astype(np.uint8))
            continue
        gray = np.where(labels > 0, 200, 20).astype(np.uint8)
        Image.fromarray(np.dstack([gray] * 3)).save(root / "images" / f"{stem}.png")
        if kind == "binary":
            Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(
                root / mask_folder / f"{stem}.png"
            )
        else:
            tifffile.imwrite(root / mask_folder / f"{stem}.tif", (labels * 1000).astype(np.uint16))
    return root


def test_a_folder_dataset_reads_binary_masks_as_one_class_and_label_images_as_nuclei(tmp_path):
    binary = datasets.open_dataset(make_folder(tmp_path / "b"), task="semantic")
    assert binary.layout == "folder" and binary.validation_ids is None
    (_, image, labels), *_ = binary.load(binary.ids()[:1])
    assert image.shape == (*SHAPE, 3) and image.dtype == np.float32
    assert set(np.unique(labels)) == {0, 1}

    instances = datasets.open_dataset(
        make_folder(tmp_path / "i", kind="instances", mask_folder="labels")
    )
    _, _, labels = instances.load(instances.ids()[:1])[0]
    assert len(np.unique(labels)) == 3, "two nuclei and the background"
    # A binary mask of nuclei is cut into nuclei by connected components.
    as_nuclei = datasets.open_dataset(tmp_path / "b")
    assert as_nuclei.load(as_nuclei.ids()[:1])[0][2].max() == 2


def test_a_ct_slice_is_read_through_its_intensity_window(tmp_path):
    root = make_folder(tmp_path / "ct", kind="ct")
    ct = datasets.open_dataset(root, window=(-1000, 400), task="semantic")
    _, image, labels = ct.load(ct.ids()[:1])[0]
    # -800 HU is 200/1400 of the way up the window, 40 HU 1040/1400.
    assert image[labels > 0].max() == pytest.approx(200 / 1400)
    assert image[labels == 0].min() == pytest.approx(1040 / 1400)
    with pytest.raises(ValueError, match=r"signed pixel values.*window"):
        datasets.open_dataset(root, task="semantic").load(ct.ids()[:1])
    with pytest.raises(ValueError, match="window_min < window_max"):
        training.TrainingConfig(window_min=400.0, window_max=-1000.0)


def test_bad_folders_and_files_are_refused_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data folder"):
        datasets.open_dataset(tmp_path / "none")
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        datasets.open_dataset(empty).ids()

    root = make_folder(tmp_path / "d", count=3)
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(root / "images" / "lonely.png")
    with pytest.raises(ValueError, match=r"lonely.png: 1 image\(s\) without a file"):
        datasets.open_dataset(root).ids()
    (root / "images" / "lonely.png").unlink()
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(root / "masks" / "orphan.png")
    with pytest.raises(ValueError, match=r"orphan.png: 1 mask\(s\) without a file"):
        datasets.open_dataset(root).ids()
    (root / "masks" / "orphan.png").unlink()

    stem = datasets.open_dataset(root).ids()[0]
    mask_path = root / "masks" / f"{stem}.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask_path)
    with pytest.raises(ValueError, match=f"{stem}.png: mask size 10x10 differs.*64x48"):
        datasets.open_dataset(root).load([stem])
    grades = np.zeros(SHAPE, np.uint8)
    grades[disc(SHAPE, (20, 20), 6)] = 7
    Image.fromarray(grades).save(mask_path)
    with pytest.raises(
        ValueError, match=f"{stem}.png: a binary mask .* 0, 1 and 255 only; found 7"
    ):
        datasets.open_dataset(root, task="semantic").load([stem])

    stack = np.zeros((3, *SHAPE), np.uint8)
    tifffile.imwrite(root / "images" / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(root / "masks" / "stack.tif", stack[0])
    with pytest.raises(ValueError, match=r"stack\.tif: a stack of 3 planes"):
        datasets.open_dataset(root).load(["stack"])


def test_a_patient_split_keeps_every_patient_on_one_side():
    ids = [f"ID_{patient:04d}_Z_{z:04d}" for patient in range(20) for z in range(patient % 4 + 1)]
    validation = datasets.make_split(ids, fraction=0.2, seed=3, group_pattern=r"ID_\d+")
    patients = {datasets.patient_of(i) for i in validation}
    training_patients = {datasets.patient_of(i) for i in ids if i not in validation}
    assert patients and training_patients and not patients & training_patients
    assert 0.1 < len(validation) / len(ids) < 0.3
    with pytest.raises(ValueError, match="no patient id"):
        datasets.make_split(["a", "b"], group_pattern=r"ID_\d+")


LUNG_CT_SPLIT = config.SPLITS_DIR / "lung_ct_validation_ids.txt"


def test_the_committed_lung_ct_split_names_40_slices():
    validation = data.load_ids(LUNG_CT_SPLIT)
    assert len(validation) == 40
    assert all(re.fullmatch(r"ID_\d{4}_Z_\d{4}", i) for i in validation)


@pytest.mark.skipif(
    not (config.LUNG_CT_DIR / "images").is_dir(),
    reason="lung CT is not unpacked (run `make data PROFILE=lung_ct`; .ci/run does)",
)
def test_the_committed_lung_ct_split_is_by_patient_and_names_real_slices():
    validation = data.load_ids(LUNG_CT_SPLIT)
    everything = datasets.open_dataset("lung_ct", (-1000, 400), "semantic").ids()
    assert len(everything) == 267
    assert set(validation) <= set(everything)
    kept = {datasets.patient_of(i) for i in everything if i not in validation}
    assert not kept & {datasets.patient_of(i) for i in validation}


def test_fetch_unpacks_the_lung_ct_zip_into_images_and_masks(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    with zipfile.ZipFile(source / "lung_ct.zip", "w") as archive:
        for folder in ("2d_images", "2d_masks"):
            archive.writestr(f"{folder}/ID_0001_Z_0001.tif", b"tiff bytes")
    target = tmp_path / "raw" / "lung_ct"
    assert fetch.fetch_lung_ct(target, source) == 1
    assert (target / "images" / "ID_0001_Z_0001.tif").is_file()
    assert (target / "masks" / "ID_0001_Z_0001.tif").is_file()
    assert fetch.fetch_lung_ct(target, source) == 1, "a second run finds it in place"
    with pytest.raises(fetch.DataUnavailableError, match="UNET_TF_LUNG_CT_SOURCE"):
        fetch.fetch_lung_ct(tmp_path / "other", tmp_path / "nowhere")
    assert fetch.profile_datasets("lung_ct") == ["lung_ct"]
    assert fetch.profile_datasets("full") == ["dsb2018"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "task", "target"),
    [
        ("binary", "semantic", "binary"),
        ("instances", "instances", "border"),
        ("ct", "semantic", "binary"),
    ],
)
def test_a_folder_dataset_trains_one_step_from_the_command_line(
    tmp_path, capsys, kind, task, target
):
    root = make_folder(tmp_path / "own", kind=kind)
    models = tmp_path / "models"
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "jit_compile"]
    # CT slices are trained at half their size, as the lung CT profile trains them.
    window = ["--window-min", "-1000", "--window-max", "400", "--input-scale", "0.5"]
    window = window if kind == "ct" else []
    status = cli(
        [
            *["train", "--data", str(root), "--task", task, "--target", target, *window],
            *["--models-dir", str(models), "--no-jit-compile", "--quiet", *options],
        ]
    )
    assert status == 0, capsys.readouterr().err
    record = training.read_run_record(models / "unet.json")
    assert record["parameters"]["dataset"] == str(root)
    # Without a split of its own, a random one is kept beside the model and out of training.
    validation = data.load_ids(models / "unet.validation_ids.txt")
    assert record["validation_images"] == len(validation) == 1
    assert record["train_images"] == 3
    assert (record["nucleus_diameter"] is None) == (task == "semantic")
    if kind == "ct":
        # predict reads new slices through the model's window (signed values are refused
        # without one).
        image = sorted((root / "images").iterdir())[0]
        out = tmp_path / "out"
        status = cli(["predict", str(image), "-o", str(out), "--model", str(models / "unet.keras")])
        assert status == 0, capsys.readouterr().err
        # Predicted at the training scale, the labels come back at the slice's own size.
        assert tifffile.imread(out / f"{image.stem}_labels.tif").shape == SHAPE


@pytest.mark.slow
def test_fine_tuning_starts_from_the_model_and_keeps_its_architecture(tmp_path):
    root = make_folder(tmp_path / "own", kind="binary")
    base = training.TrainingConfig(
        **TINY,
        dataset=str(root),
        task="semantic",
        target="binary",
        representation="rgb",
        model_name="base",
    )
    first = training.train(base, models_dir=tmp_path, verbose=0)
    tuned = replace(base, model_name="tuned", init_model=str(tmp_path / "base.keras"))
    # Zero learning would keep the weights: here one step must move them from the start.
    second = training.train(tuned, models_dir=tmp_path, verbose=0)
    before, after = first.model.get_weights(), second.model.get_weights()
    assert [w.shape for w in before] == [w.shape for w in after]
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    record = training.read_run_record(tmp_path / "tuned.json")
    assert record["parameters"] == asdict(tuned)

    # Starting from the base model but not training: the weights are the base model's.
    net = training.build_model(tuned)
    training.initialise_from(net, tuned)
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights(), strict=True))

    for change, message in [
        ({"representation": "nuclei_bright"}, r"3 input channel.*representation='rgb'"),
        ({"target": "border", "task": "instances"}, r"output channel.*target='binary'"),
        ({"base_filters": 8}, r"another architecture.*'base_filters': 4"),
    ]:
        wrong = replace(tuned, **change)
        with pytest.raises(ValueError, match=message):
            training.initialise_from(training.build_model(wrong), wrong)
    with pytest.raises(FileNotFoundError, match="no such model"):
        missing = replace(tuned, init_model=str(tmp_path / "none.keras"))
        training.initialise_from(training.build_model(missing), missing)


@pytest.mark.slow
def test_a_semantic_profile_trains_and_reports_into_its_own_folder(tmp_path):
    root = make_folder(tmp_path / "ct", count=6, kind="ct")
    profile = tmp_path / "ct.json"
    parameters = {
        **{k: v for k, v in TINY.items() if k != "jit_compile"},
        "dataset": str(root),
        "task": "semantic",
        "target": "binary",
        "representation": "rgb",
        "window_min": -1000.0,
        "window_max": 400.0,
        "model_name": "ct",
    }
    profile.write_text(
        json.dumps(
            {
                "notebooks": ["02-training", "06-semantic-results"],
                "reports": "ct",
                "parameters": parameters,
            }
        )
    )
    result = run_report(tmp_path, "--profile", str(profile))
    assert result.returncode == 0, result.stderr[-3000:]
    reports = tmp_path / "reports" / "ct"
    assert (reports / "06-semantic-results.html").is_file()
    assert not (tmp_path / "reports" / "03-results.ipynb").exists()
    assert (reports / "figures" / "06-worst-images.png").is_file()
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["images"] == 1
    # The number reported is the saved model's on the held-out slice, worked out here again.
    from unet_tf import evaluation
    from unet_tf import metrics as scoring

    record = training.read_run_record(tmp_path / "models" / "ct.json")
    ((image_id, image, truth),) = evaluation.semantic_samples(record)
    net = training.load_model(tmp_path / "models" / "ct.keras")
    output = evaluation.predict_semantic(net, [(image_id, image, truth)], record)[0]
    assert metrics["dice"] == pytest.approx(scoring.dice(truth > 0, output[..., 0] > 0.5))
    assert "HD95" in (reports / "summary.md").read_text()
    assert (tmp_path / "models" / "ct.keras").is_file()


def test_the_lung_ct_profile_names_parameters_its_notebooks_declare():
    profile = report.load_profile("lung_ct")
    notebooks = [
        config.PROJECT_ROOT / "notebooks" / f"{name}.ipynb" for name in profile["notebooks"]
    ]
    chosen = report.notebook_parameters(notebooks, profile)
    assert chosen["02-training"]["dataset"] == "lung_ct"
    training.TrainingConfig(**{k: v for k, v in chosen["02-training"].items()})
