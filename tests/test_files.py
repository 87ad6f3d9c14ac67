"""Atomic writes: the old file survives a failure, and finished files get ordinary permissions."""

import stat

import pytest

from unet_tf import files
from unet_tf.files import atomic_path, write_json


def test_failure_keeps_the_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"dsb_score": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as partial:
            partial.write_text("{ torn")
            raise RuntimeError("killed halfway")
    assert target.read_text().strip().startswith("{")
    assert '"dsb_score": 0.5' in target.read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


def test_finished_file_follows_the_umask(tmp_path):
    write_json(tmp_path / "out.json", {})
    mode = stat.S_IMODE((tmp_path / "out.json").stat().st_mode)
    # mkstemp alone would give 0o600 whatever the umask.
    assert mode == 0o666 & ~files._UMASK
