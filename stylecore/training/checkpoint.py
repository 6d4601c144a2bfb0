"""Checkpoint files of a training run, all written atomically.

``OUTDIR/<weights>.pth``      the network's plain state_dict (exactly what inference loads), latest
``OUTDIR/checkpoints/<prefix>_stepNNNNNNN.pth``   the same, kept per periodic checkpoint
``OUTDIR/losses.csv``         the loss curve
``OUTDIR/train_state.pth``    step, network, optimizer, torch RNG state, the run's settings and the loss log's
                              position (resume); written last at each checkpoint, so it commits the others
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..errors import OptionsError, WeightsError
from ..fsutil import atomic_write_bytes

STATE_FILE = "train_state.pth"
LOSS_FILE = "losses.csv"


def save_tensors(obj, path: Path) -> None:
    """``torch.save`` into memory, then an atomic write."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A contiguous CPU copy of a module's state_dict (loadable on any device)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def load_train_state(out_dir: Path) -> dict:
    """Read ``train_state.pth`` (``weights_only=True``)."""
    path = out_dir / STATE_FILE
    if not path.exists():
        raise OptionsError(f"--resume: no training state at {path}; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path}: not a readable training state ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") from None
    if not isinstance(state, dict) or not {"step", "model", "optimizer", "settings"} <= set(state):
        raise WeightsError(f"{path}: not a stylecore training state (missing step/model/optimizer/settings)")
    return state


def write_losses(path: Path, rows: list[dict]) -> None:
    """Write the loss curve CSV atomically (columns from the first row); no rows removes a stale file."""
    if not rows:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_losses(path: Path, up_to_step: int) -> list[dict]:
    """Rows of an existing loss CSV with ``step <= up_to_step`` (values as strings). A file that is not a loss
    log (edited, or saved by a spreadsheet: a byte-order mark is fine) is an ``OptionsError`` naming the line."""
    if not path.exists():
        return []
    fix = "fix it, or delete it to resume without the earlier rows"
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "step" not in (reader.fieldnames or []):
            raise OptionsError(f"--resume: {path}: not a loss log (no 'step' column in its header); {fix}")
        rows = []
        for row in reader:
            try:
                step = int(row["step"])
            except (TypeError, ValueError):
                raise OptionsError(f"--resume: {path}, line {reader.line_num}: step {row['step']!r} is not a "
                                   f"whole number; {fix}") from None
            if step <= up_to_step:
                rows.append(row)
        return rows
