"""`make data`: local zips, the download path (served from 127.0.0.1), checks and atomicity."""

import functools
import http.server
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from unet_tf import config, fetch

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_zip(path: Path, image_ids, with_masks=True, compression=zipfile.ZIP_DEFLATED) -> Path:
    """A miniature Kaggle zip: ``<id>/images/<id>.png`` (and a mask) per image id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for image_id in image_ids:
            archive.writestr(
                f"{image_id}/images/{image_id}.png", b"png bytes of " + image_id.encode()
            )
            if with_masks:
                archive.writestr(f"{image_id}/masks/m1.png", b"mask bytes")
    return path


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "source"
    make_zip(folder / "stage1_train.zip", ["a", "b", "c"])
    make_zip(folder / "stage1_test.zip", ["t1", "t2"], with_masks=False)
    (folder / "stage1_sample_submission.csv").write_text("ImageId,EncodedPixels\nt1,1 1\nt2,1 1\n")
    return folder


def run_fetch(tmp_path, source, url="http://127.0.0.1:9/"):
    return fetch.fetch(tmp_path / "raw", source, url, tmp_path / "external")


def test_unpacks_local_zips_in_kaggle_layout(tmp_path, source):
    counts = run_fetch(tmp_path, source)
    raw = tmp_path / "raw"
    assert counts == {"stage1_train": 3, "stage1_test": 2}
    assert (raw / "stage1_train" / "a" / "images" / "a.png").read_bytes() == b"png bytes of a"
    assert (raw / "stage1_train" / "a" / "masks" / "m1.png").is_file()
    assert (raw / "stage1_sample_submission.csv").is_file()
    assert not list(raw.glob(fetch.PARTIAL_PREFIX + "*"))


def test_second_run_does_nothing(tmp_path, source):
    run_fetch(tmp_path, source)
    marker = tmp_path / "raw" / "stage1_train" / "a" / "images" / "a.png"
    marker.write_bytes(b"changed")
    (source / "stage1_train.zip").unlink()  # A second run must not even look for the zip.
    assert run_fetch(tmp_path, source) == {"stage1_train": 3, "stage1_test": 2}
    assert marker.read_bytes() == b"changed"


def test_leftovers_of_an_interrupted_run_are_removed(tmp_path, source):
    leftover = tmp_path / "raw" / f"{fetch.PARTIAL_PREFIX}stage1_train-xyz"
    (leftover / "half").mkdir(parents=True)
    run_fetch(tmp_path, source)
    assert not leftover.exists()


def test_corrupt_archive_is_refused_and_nothing_is_left(tmp_path, source):
    archive = make_zip(source / "stage1_train.zip", ["a"], compression=zipfile.ZIP_STORED)
    content = bytearray(archive.read_bytes())
    position = content.index(b"png bytes of a")
    content[position] ^= 0xFF
    archive.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="fails its CRC check") as info:
        run_fetch(tmp_path, source)
    assert str(archive) in str(info.value)
    raw = tmp_path / "raw"
    assert not (raw / "stage1_train").exists()
    assert not list(raw.glob(fetch.PARTIAL_PREFIX + "*"))


def test_not_a_zip_is_refused(tmp_path, source):
    (source / "stage1_train.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="not a readable zip"):
        run_fetch(tmp_path, source)


def test_members_outside_the_folder_are_refused(tmp_path, source):
    with zipfile.ZipFile(source / "stage1_train.zip", "w") as archive:
        archive.writestr("../escape.png", b"x")
    with pytest.raises(ValueError, match="outside the archive folder"):
        run_fetch(tmp_path, source)
    assert not (tmp_path / "escape.png").exists()


def test_a_zip_wrapping_a_top_folder_is_unwrapped(tmp_path, source):
    with zipfile.ZipFile(source / "stage1_test.zip", "w") as archive:
        archive.writestr("stage1_test/t1/images/t1.png", b"x")
    run_fetch(tmp_path, source)
    assert (tmp_path / "raw" / "stage1_test" / "t1" / "images" / "t1.png").is_file()


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/served; yields (folder, base URL, log)."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            requests.append(self.path)

    handler = functools.partial(Handler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()
    httpd.server_close()


def cli(env_overrides, *args):
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "unet_tf.fetch", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_downloads_when_there_is_no_local_source(tmp_path, server):
    served, url, requests = server
    make_zip(served / "stage1_train.zip", ["a", "b"])
    make_zip(served / "stage1_test.zip", ["t1"], with_masks=False)
    env = {
        "UNET_TF_DATA_DIR": str(tmp_path / "data"),
        "UNET_TF_DSB2018_SOURCE": str(tmp_path / "no-such-folder"),
        "UNET_TF_DSB2018_URL": url,
    }
    result = cli(env)
    assert result.returncode == 0, result.stderr
    raw = tmp_path / "data" / "raw"
    assert sorted(p.name for p in (raw / "stage1_train").iterdir()) == ["a", "b"]
    assert (raw / "stage1_test" / "t1" / "images" / "t1.png").is_file()
    assert sorted(requests) == ["/stage1_test.zip", "/stage1_train.zip"]
    # The downloads are kept, so unpacking again needs no network.
    assert (tmp_path / "data" / "external" / "stage1_train.zip").is_file()
    assert not list((tmp_path / "data" / "external").glob("*.part"))


def test_no_source_and_no_download_fails_naming_both_ways(tmp_path, server):
    _, url, _ = server  # The server has no files: every download is a 404.
    env = {
        "UNET_TF_DATA_DIR": str(tmp_path / "data"),
        "UNET_TF_DSB2018_SOURCE": str(tmp_path / "no-such-folder"),
        "UNET_TF_DSB2018_URL": url,
    }
    result = cli(env)
    assert result.returncode == 1
    assert "stage1_train.zip" in result.stderr
    assert "UNET_TF_DSB2018_SOURCE" in result.stderr
    assert "internet" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data" / "raw" / "stage1_train").exists()


def test_default_source_is_the_shared_folder_beside_the_project():
    if "UNET_TF_DSB2018_SOURCE" in os.environ:
        pytest.skip("the source is overridden in this environment")
    assert config.DSB2018_SOURCE == PROJECT_ROOT.parent / "shared" / "data" / "dsb2018"
