"""Stopping a long command cleanly on Ctrl-C (SIGINT) or ``kill`` (SIGTERM).

Inside :func:`stop_on_signals`, either signal raises :class:`Stopped` where the program
is, as Ctrl-C raises ``KeyboardInterrupt``; inside :func:`deferred` (writing a set of files
that belong together) it is raised only once the block is done, so that a stop never leaves
half of such a set behind.
"""

import contextlib
import signal
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Blocks of deferred() now open, and the signal that arrived during them.
_deferring = 0
_pending: int | None = None


class Stopped(KeyboardInterrupt):
    """A signal asked the command to stop.

    A ``KeyboardInterrupt``, so that code which catches every ``Exception`` lets it through.
    """

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def name(self) -> str:
        """The signal's name: ``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signal_number).name

    @property
    def exit_status(self) -> int:
        """The shell's convention for a command ended by a signal: 128 plus its number."""
        return 128 + self.signal_number


def _handle(signal_number, frame) -> None:
    global _pending
    if _deferring:
        _pending = signal_number
        return
    raise Stopped(signal_number)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Stopped`; the handlers before it
    are restored after. Only the main thread can set handlers: elsewhere this does nothing.

    SIGINT is caught even where the shell started the command with it ignored (a job put in
    the background with ``&``), so that ``kill -INT`` stops such a run cleanly too."""
    global _pending
    try:
        previous = {number: signal.signal(number, _handle) for number in SIGNALS}
    except ValueError:  # Not the main thread.
        previous = {}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back a stop until the block is done, then raise it (if the block itself
    raised, its error goes on instead)."""
    global _deferring, _pending
    _deferring += 1
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            number, _pending = _pending, None
            if not failed:
                raise Stopped(number)
