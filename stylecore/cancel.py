"""Process-wide cancellation of long work: a command line that is interrupted (Ctrl-C, SIGTERM) calls
:func:`cancel`, and the shard loops and the Gatys optimisation stop at their next step with :class:`Cancelled`.

The shards of a local run work in threads that the interpreter waits for before it exits: without this, an
interrupted ``stylize run`` kept computing its current shard (thousands of rows) before it could exit.
Outputs already written stay (they are atomic); the interrupted rows are made by the next run.
"""
from __future__ import annotations

import threading

_EVENT = threading.Event()


class Cancelled(BaseException):
    """The process is stopping: long work raises this at its next step. A BaseException, like
    KeyboardInterrupt, so that no row is recorded as failed because of it."""


def cancel() -> None:
    """Ask every running shard loop and optimisation in this process to stop."""
    _EVENT.set()


def cancelled() -> bool:
    """Whether :func:`cancel` was called."""
    return _EVENT.is_set()


def check() -> None:
    """Raise :class:`Cancelled` when :func:`cancel` was called."""
    if _EVENT.is_set():
        raise Cancelled("cancelled: the process is stopping")


def reset() -> None:
    """Clear a cancellation (tests, and processes that go on after one)."""
    _EVENT.clear()


__all__ = ["Cancelled", "cancel", "cancelled", "check", "reset"]
