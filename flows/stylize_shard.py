"""Flow ``stylize-shard``: run one shard manifest on one worker (the ``stylize-shard/gpu`` deployment)."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from tasks.shards import execute_shard
from flows.failures import fail_plainly


@flow(name="stylize-shard", persist_result=False)
@fail_plainly
def stylize_shard(shard: str, metrics: str | None = None, index: int = 0, encoder: str = "imagenet",
                  decoder: str | None = None, model: str | None = None, device: str = "auto",
                  overwrite: bool = False, batch_size: int = 0, quality: bool = True) -> dict[str, Any]:
    """Stylize the rows of the shard manifest ``shard`` with this process's engine and write their metrics
    to ``metrics`` (default: beside the shard, ``*.metrics.parquet``). Rows already written are skipped."""
    if not metrics:
        metrics = shard[: -len(".parquet")] + ".metrics.parquet" if shard.endswith(".parquet") else shard + ".metrics.parquet"
    return execute_shard(shard, metrics, encoder=encoder, decoder=decoder, model=model, device=device,
                         overwrite=overwrite, batch_size=batch_size, quality=quality, index=index,
                         logger=get_run_logger())


if __name__ == "__main__":  # pragma: no cover - manual use: python -m flows.stylize_shard SHARD_URI
    import sys

    print(stylize_shard(sys.argv[1]))
