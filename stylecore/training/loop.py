"""The optimisation loop shared by the recipes: lr schedule, logging, checkpoints and resume."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .. import uris
from ..errors import OptionsError
from ..fsutil import remove_partials
from .checkpoint import LOSS_FILE, STATE_FILE, cpu_state_dict, load_train_state, read_losses, save_tensors, write_losses

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None

# Settings that may change between a run and its resumption; any other change is refused.
RESUMABLE = frozenset({"steps", "checkpoint_every", "log_every", "device", "workers", "out_dir"})
LOCK_FILE = ".train.lock"  # held by the run writing a folder (claim_out_dir)
# Settings of the machine, not of the run: a resume never takes them from the saved state.
MACHINE = frozenset({"device", "workers", "out_dir"})


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run produced."""

    weights: Path
    state: Path
    losses: Path
    step: int
    start_step: int
    rows: list[dict] = field(default_factory=list)


def local_dir(out_dir: str | Path) -> Path:
    """``-o`` as a local folder: a ``file://`` URI is its path; another scheme (``s3://``) is refused, since
    checkpoints are written to local disk (``Path`` would turn ``s3://b/run`` into a local ``s3:/b/run``)."""
    text = str(out_dir)
    scheme = uris.scheme_of(text)
    if scheme == "file":
        return Path(uris.file_uri_to_path(text))
    if scheme is not None or re.match(r"(?i)s3:/", text):
        raise OptionsError(f"-o {uris.redact(text)}: training writes to a local folder; give a local path "
                           f"(and copy the run to S3 afterwards, e.g. with `aws s3 sync`)")
    return Path(text).expanduser()


def check_out_dir(out_dir: str | Path, *, resume: bool) -> Path:
    """Cheap checks of ``-o``, before any work: it is (or can become) a local folder, holds a run to resume with
    ``--resume`` and none without. Returns it as a local path (:func:`local_dir`)."""
    out_dir = local_dir(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OptionsError(f"-o {out_dir}: exists and is not a folder")
    parent = out_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OptionsError(f"-o {out_dir}: {parent} is not a folder")
    state = out_dir / STATE_FILE
    if resume and not state.is_file():
        raise OptionsError(f"--resume: no training state at {state}; start without --resume")
    if not resume and state.exists():
        raise OptionsError(f"-o {out_dir}: already holds a training run ({STATE_FILE}); pass --resume or choose another folder")
    return out_dir


def check_recipe(out_dir: Path, saved: dict, method: str | None) -> None:
    """Refuse to resume a run saved by another recipe than ``method`` (adain, johnson)."""
    was = saved.get("method")
    if was and method and was != method:
        raise OptionsError(f"--resume: {out_dir} holds {_a(was)} {was} training run ({out_dir / STATE_FILE}), not "
                           f"{_a(method)} {method} one; resume it with `stylize train {was}` or choose another -o folder")


PATH_SETTINGS = ("content", "style", "encoder", "loss_network")  # data folders, manifests, images, weight files


def absolute_paths(settings: dict) -> dict:
    """``settings`` with its local data and weight paths absolute (``imagenet``, ``random:SEED`` and URIs as they
    are), so that the saved run resumes from any working directory, and the same folder named relatively or
    absolutely is the same setting."""
    out = dict(settings)
    for k in PATH_SETTINGS:
        v = out.get(k)
        if not isinstance(v, str) or not v.strip() or uris.scheme_of(v) or v.lower() == "imagenet" \
                or v.lower().startswith("random:"):
            continue
        out[k] = os.path.abspath(os.path.expanduser(v))
    return out


def check_resumable(out_dir: Path, saved: dict, settings: dict) -> None:
    """Refuse to resume the run saved with ``saved`` settings as one of another recipe, or with a setting
    outside ``RESUMABLE`` changed (naming it and both values)."""
    state_path = out_dir / STATE_FILE
    check_recipe(out_dir, saved, settings.get("method"))
    saved, settings = absolute_paths(saved), absolute_paths(settings)  # runs saved before paths were absolute too
    changed = sorted(k for k in set(saved) | set(settings) if k not in RESUMABLE and saved.get(k) != settings.get(k))
    if changed:
        k = changed[0]
        raise OptionsError(f"--resume: {k} was {saved.get(k)!r} in {state_path}, now {settings.get(k)!r}; "
                           f"only {', '.join(sorted(RESUMABLE - {'out_dir'}))} may change")


@contextlib.contextmanager
def claim_out_dir(out_dir: str | Path, *, resume: bool, settings: dict) -> Iterator[tuple[Path, dict | None]]:
    """Hold ``-o`` for one training run, before its data and networks are loaded: check it, create it, and lock
    it (``.train.lock``, released when the process ends however it ends), so a second run into the same folder
    is refused rather than overwriting this one's checkpoints. With ``resume``, read the saved state under the
    lock and check its recipe, settings and step against ``settings``. Removes the temporary files of
    checkpoint writes a killed run left. Yields the folder and the saved state (None without ``resume``), for
    :func:`run_loop`. A folder created here is removed again when the run fails before it wrote anything."""
    out_dir = check_out_dir(out_dir, resume=resume)
    created = []
    top = out_dir
    while not top.exists():
        created.append(top)
        top = top.parent
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = open(out_dir / LOCK_FILE, "ab")
    except OSError as e:
        raise OptionsError(f"-o {out_dir}: cannot create the folder ({e.strerror or e})") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise OptionsError(f"-o {out_dir}: another training run is using this folder ({LOCK_FILE} is "
                                   f"locked); wait for it to finish or choose another folder") from None
        check_out_dir(out_dir, resume=resume)  # again, under the lock: a run may have committed meanwhile
        state = load_train_state(out_dir) if resume else None
        if state is not None:
            check_resumable(out_dir, state["settings"], settings)
            if int(state["step"]) >= settings["steps"]:
                raise OptionsError(f"--steps {settings['steps']}: the run in {out_dir} is already at step "
                                   f"{int(state['step'])}")
        for folder in (out_dir, out_dir / "checkpoints"):
            remove_partials(folder, None)
        yield out_dir, state
    except BaseException:
        if created and not any(p.name != LOCK_FILE for p in out_dir.iterdir()):
            with contextlib.suppress(OSError):
                (out_dir / LOCK_FILE).unlink()
                for folder in created:  # deepest first, only the folders made here
                    folder.rmdir()
        raise
    finally:
        lock.close()


def resume_settings(out_dir: str | Path, given: dict, method: str) -> dict:
    """The settings to resume the ``method`` (adain, johnson) run in ``out_dir`` with: those saved in its
    ``train_state.pth``, overridden by ``given`` (what the command or the flow named). The machine's settings
    (device, workers, out_dir) are never taken from the state. Raises ``OptionsError`` when ``out_dir`` holds
    no run, or one of another recipe."""
    out_dir = check_out_dir(out_dir, resume=True)
    saved = load_train_state(out_dir)["settings"]
    check_recipe(out_dir, saved, method)
    merged = {k: v for k, v in saved.items() if k not in MACHINE and k != "method"}
    merged.update(given)
    return merged


def run_loop(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step_fn: Callable[[int], dict],
             lr_fn: Callable[[int], float], out_dir: Path, weights_name: str, prefix: str, settings: dict,
             steps: int, checkpoint_every: int, log_every: int, state: dict | None,
             on_log: Callable[[dict], None] | None = None) -> TrainResult:
    """Run steps ``start..steps-1`` in the folder :func:`claim_out_dir` holds, continuing from its saved ``state``
    (None: a fresh run). ``step_fn(step)`` returns a dict of losses with a ``total`` tensor to minimise."""
    out_dir = Path(out_dir)
    state_path, loss_path, weights_path = out_dir / STATE_FILE, out_dir / LOSS_FILE, out_dir / weights_name
    start, rows, logged, acc, n_acc, elapsed = 0, [], 0, {}, 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        logged = int(state.get("logged", start))
        acc, n_acc = dict(state.get("acc", {})), int(state.get("n_acc", 0))
        elapsed = float(state.get("seconds", 0.0))
        rows = read_losses(loss_path, logged)  # drops rows written after the state (a kill) and a final partial row

    def checkpoint(step: int, periodic: bool) -> None:
        # The training state is written last: it is the commit point. A resume after a kill between these writes
        # starts from the previous state and keeps only the loss rows it covers (up to its ``logged`` step).
        weights = cpu_state_dict(model)
        save_tensors(weights, weights_path)
        if periodic:
            save_tensors(weights, out_dir / "checkpoints" / f"{prefix}_step{step:07d}.pth")
        write_losses(loss_path, rows)
        save_tensors({"step": step, "model": weights, "optimizer": optimizer.state_dict(),
                      "torch_rng": torch.get_rng_state(), "settings": settings, "logged": logged,
                      "acc": dict(acc), "n_acc": n_acc, "seconds": time.perf_counter() - t0}, state_path)

    model.train()
    t0, last = time.perf_counter() - elapsed, start
    for step in range(start, steps):
        lr = lr_fn(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        losses = step_fn(step)
        total = losses["total"]
        if not torch.isfinite(total):
            raise OptionsError(f"training diverged at step {step + 1} (loss {total.item()}); lower --lr or the loss weights")
        total.backward()
        optimizer.step()
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        n_acc += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            row = {"step": done, "lr": f"{lr:.6g}"}
            row.update({k: f"{v / n_acc:.6g}" for k, v in acc.items()})
            row["seconds"] = f"{time.perf_counter() - t0:.3f}"
            rows.append(row)
            if on_log:
                on_log(row)
            if done % log_every == 0:  # a final off-cadence row keeps the sums, so a resumed run averages as one would
                acc, n_acc, logged = {}, 0, done
        if done % checkpoint_every == 0 or done == steps:
            checkpoint(done, periodic=done % checkpoint_every == 0)
            last = done
    model.eval()
    return TrainResult(weights_path, state_path, loss_path, last, start, rows)


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def print_progress(row: dict) -> None:
    """Default ``on_log``: one line per logged step on stderr."""
    parts = [f"{k}={v}" for k, v in row.items() if k != "step"]
    print(f"step {row['step']}: " + " ".join(parts), file=sys.stderr, flush=True)
