"""Atomic writes: the old file survives a failure, and finished files get ordinary permissions."""

import stat
import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_finished_file_follows_the_umask(tmp_path, umask, expected):
    # A fresh process with a known umask (the library reads it once, at import), so that
    # the expected mode comes from the process and not from the library's own reading.
    script = (
        f"import os; os.umask({umask}); from unet_tf import files; "
        f"files.write_json({str(tmp_path / 'out.json')!r}, {{}})"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    # mkstemp alone would give 0o600 whatever the umask.
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == expected
