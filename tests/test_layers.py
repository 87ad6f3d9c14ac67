"""The layers of unet_tf, as pyproject.toml's import-linter contracts state them: no import
cycle, no training code where a trained model is served, no command line in the library."""

import subprocess
import sys
from pathlib import Path

from unet_tf import config


def test_the_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=config.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout
