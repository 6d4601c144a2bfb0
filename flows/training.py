"""Flow ``train-style-model``: train an AdaIN decoder or a Johnson network as one Prefect task.

    python -m flows.training johnson '{"content": "photos/", "style": "starry.jpg", "out_dir": "runs/starry"}'
"""
from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.training import train_network
from flows.failures import fail_plainly


@flow(name="train-style-model", persist_result=False)
@fail_plainly
def train_style_model(recipe: str, settings: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Train with ``stylecore.training`` (``recipe`` adain or johnson; ``settings`` are the recipe's config
    fields: content, style, out_dir, steps, ...). Re-running with ``resume=True`` continues from the last checkpoint."""
    return train_network(recipe, settings, resume)


if __name__ == "__main__":  # pragma: no cover - manual use
    import json
    import sys

    print(train_style_model(sys.argv[1], json.loads(sys.argv[2]), resume="--resume" in sys.argv[3:]))
