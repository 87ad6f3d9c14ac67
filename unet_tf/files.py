"""Atomic file writing: a killed process leaves the old file or the new one, never a torn one."""

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates files readable by their owner only; finished outputs should get the
# permissions any other file written here would get. The umask can only be read by
# setting it, so it is read once, at import, before any threads write files.
_UMASK = os.umask(0)
os.umask(_UMASK)


def set_usual_permissions(path: str | Path) -> None:
    """Give a file or folder the permissions the umask gives new ones (``mkstemp`` and
    ``mkdtemp`` make them private to the owner)."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as partial:
    ...     _ = partial.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    partial = Path(name)
    try:
        yield partial
        if partial.exists():
            set_usual_permissions(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def partial_files(folder: str | Path) -> list[tuple[Path, str]]:
    """The temporary files :func:`atomic_path` left in ``folder`` when its process was
    killed while writing, each with the name of the file it was to become."""
    pattern = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
    found = []
    for path in Path(folder).glob(".*.tmp") if Path(folder).is_dir() else []:
        match = pattern.fullmatch(path.name)
        if match:
            found.append((path, match.group(1)))
    return found


def write_json(path: str | Path, payload) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
