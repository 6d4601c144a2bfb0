"""Small tables and JSON documents on any storage URI (shard manifests, metrics, summaries, indexes)."""
from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from . import storage
from .errors import StorageError


def write_parquet(frame: pd.DataFrame, uri: str) -> None:
    """Write ``frame`` as Parquet to ``uri`` atomically (index dropped)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())


def read_parquet(uri: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a Parquet table (or only ``columns``) from ``uri``; a file that is not one is a one-line
    ``StorageError``."""
    data = storage.read_bytes(uri)
    try:
        return pd.read_parquet(io.BytesIO(data), columns=columns)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        reason = " ".join(str(e).split())[:200]
        raise StorageError(f"{uri}: not a readable Parquet table ({type(e).__name__}: {reason})") from None


def write_csv(frame: pd.DataFrame, uri: str) -> None:
    """Write ``frame`` as UTF-8 CSV to ``uri`` atomically."""
    storage.write_bytes(uri, frame.to_csv(index=False).encode("utf-8"))


def write_json(obj: Any, uri: str) -> None:
    """Write ``obj`` as indented JSON to ``uri`` atomically (NaN becomes null)."""
    storage.write_bytes(uri, (json.dumps(_clean(obj), indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))


def read_json(uri: str) -> Any:
    """Read a JSON document from ``uri``."""
    return json.loads(storage.read_bytes(uri).decode("utf-8"))


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        try:
            return _clean(obj.item())
        except (ValueError, AttributeError):
            return obj
    return obj
