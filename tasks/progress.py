"""In-process progress listeners (the CLI's progress bar) and the Prefect progress artifact.

Listeners receive event dicts: ``{"event": "start", "total": rows_to_run, "skipped": n, "shards": k}``,
``{"event": "rows", "shard": i, "done": n, "total": m}`` (local shards, per row) and
``{"event": "shard", "shard": i, "done": m, "total": m, "status": ...}`` (a shard finished).
"""
from __future__ import annotations

import threading
from typing import Callable

_listeners: list[Callable[[dict], None]] = []
_lock = threading.Lock()


def add_listener(fn: Callable[[dict], None]) -> None:
    """Receive progress events of flows running in this process."""
    with _lock:
        _listeners.append(fn)


def remove_listener(fn: Callable[[dict], None]) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def emit(event: dict) -> None:
    """Send ``event`` to every listener; a failing listener never breaks the run."""
    with _lock:
        targets = list(_listeners)
    for fn in targets:
        try:
            fn(event)
        except Exception:  # noqa: BLE001
            pass


class ProgressArtifact:
    """A Prefect progress artifact for the current flow run, updated as shards complete."""

    def __init__(self, description: str):
        from prefect.artifacts import create_progress_artifact

        self.id = None
        try:
            self.id = create_progress_artifact(progress=0.0, description=description)
        except Exception:  # noqa: BLE001 - observability never fails the run
            self.id = None

    def update(self, done: int, total: int) -> None:
        if self.id is None:
            return
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(self.id, progress=100.0 * done / total if total else 100.0)
        except Exception:  # noqa: BLE001
            pass
