"""Checks of a run's settings and weights that need no Prefect: the ``stylize-collection`` and ``augment-dataset``
flows run them first, and ``stylize run`` before it starts Prefect (so a typo fails in seconds, not after a
server start)."""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from stylecore import storage
from stylecore.device import check_device_name, resolve_device
from stylecore.errors import OptionsError, StorageError, WeightsError
from stylecore.keys import used_specs
from stylecore.weights import parse_spec

DISPATCH = ("local", "pool")


def allowed_failures(max_failed: Any, total: int) -> int:
    """``max_failed`` as a row count: an integer count, or a fraction in (0, 1) of the manifest's rows."""
    if max_failed is None or max_failed == "":
        return 0
    value = float(max_failed)
    if value < 0 or math.isnan(value):
        raise ValueError(f"max_failed: {max_failed!r} must be a count >= 0 or a fraction in (0, 1)")
    if 0 < value < 1:
        return int(math.floor(value * total))
    if not value.is_integer():
        raise ValueError(f"max_failed: {max_failed!r} must be a whole count or a fraction in (0, 1)")
    return int(value)


def _whole(name: str, value: Any, low: int, what: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value != int(value) or value < low:
        raise OptionsError(f"{name}: {value!r} is not {what}")


def check_run_settings(*, device: str, dispatch: str, shard_size: Any, concurrency: Any, max_shard_retries: Any,
                       batch_size: Any, max_failed: Any) -> None:
    """One-line ``OptionsError`` for run settings that would fail every shard after its retries (a device
    name nobody knows, or CUDA on a local run without it) or that would be silently changed (counts below
    their minimum), before anything is listed or planned."""
    if dispatch not in DISPATCH:
        raise OptionsError(f"dispatch: unknown value {dispatch!r}; expected local or pool")
    for name, value in (("shard_size", shard_size), ("concurrency", concurrency)):
        if value is not None:
            _whole(name, value, 1, "a whole number >= 1 (leave it empty for the default)")
    _whole("max_shard_retries", max_shard_retries, 0, "a whole number >= 0")
    _whole("batch_size", batch_size, 0, "a whole number >= 0 (0: automatic)")
    try:
        allowed_failures(max_failed, 0)
    except (TypeError, ValueError) as e:
        raise OptionsError(str(e) if isinstance(e, ValueError) else f"max_failed: {max_failed!r} is not a number") from None
    if dispatch == "local":
        resolve_device(device)  # shards run in this process
    else:
        check_device_name(device)  # the GPU workers have the device, not necessarily this host


def check_weights(methods: Mapping[str, int] | Iterable[str], engine: dict[str, Any], dispatch: str, *,
                  allowed: int = 0, files: bool = True) -> None:
    """One-line ``OptionsError``/``WeightsError`` when the rows' methods lack the weights they need (adain: a
    decoder, johnson: a model) or a spec is malformed; with ``files``, when shards run here, also when a weights
    file is missing (local, or on S3 with one HEAD) or does not load. ``methods`` maps each method of the rows
    to run to its row count: weights that do not load fail the run only when their rows would be more than
    ``allowed`` failures; otherwise those rows fail alone, with the loader's error. Shards that run here reuse
    the networks loaded for this check (``get_engine``), so nothing loads twice. Pool workers may reach other
    files and buckets, so their weights are not checked here."""
    counts = dict(methods) if isinstance(methods, Mapping) else {m: 1 for m in methods}
    counts = {str(m): int(n) for m, n in counts.items() if n > 0}  # (a categorical column counts absent ones as 0)
    needs = {"adain": ("decoder", "--decoder SPEC (a decoder.pth; the decoder parameter of a flow run)"),
             "johnson": ("model", "--model SPEC (a fast_neural_style .pth; the model parameter of a flow run)")}
    local = dispatch == "local" and files
    for method in sorted(counts):
        for role, spec in used_specs(method, engine).items():
            if spec is None:
                raise OptionsError(f"method {method} needs {role} weights: {needs[method][1]}")
            parsed = parse_spec(spec, allow_imagenet=role == "encoder", what=role)
            if local and parsed.kind == "path" and not os.path.isfile(parsed.value):
                raise WeightsError(f"{role} {parsed.value}: file not found")
            if local and parsed.kind == "s3":
                try:
                    found = storage.exists(parsed.value)
                except StorageError as e:
                    raise WeightsError(f"{role}: {e}") from None
                if not found:
                    raise WeightsError(f"{role} {parsed.value}: not found")
    if local and counts:
        from stylecore.engine import get_engine

        failed = get_engine(engine.get("encoder") or "imagenet", engine.get("decoder"), engine.get("model"),
                            engine.get("device") or "auto", progress=False).load_networks(sorted(counts))
        if failed and sum(counts[m] for m in failed) > allowed:
            raise next(iter(failed.values()))
