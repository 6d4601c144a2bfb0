"""Prefect task over stylecore training: one task is one whole training run (resumable)."""
from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

RECIPES = ("adain", "johnson")


@task(name="train-network", persist_result=False, retries=0)
def train_network(recipe: str, settings: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Run ``stylecore.training`` for ``recipe`` (adain or johnson) with the config fields in ``settings``;
    returns the written paths, the final step and the last logged losses."""
    from stylecore.errors import OptionsError

    logger = get_run_logger()

    def log(row: dict) -> None:
        logger.info("step %s: %s", row["step"], " ".join(f"{k}={v}" for k, v in row.items() if k != "step"))

    if recipe == "adain":
        from stylecore.training.adain import AdaINTrainConfig as Config, train_adain as train
    elif recipe == "johnson":
        from stylecore.training.johnson import JohnsonTrainConfig as Config, train_johnson as train
    else:
        raise OptionsError(f"recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    try:
        cfg = Config(**settings)
    except TypeError as e:
        raise OptionsError(f"{recipe} training settings: {e}") from None
    result = train(cfg, resume=resume, on_log=log)
    return {"weights": str(result.weights), "state": str(result.state), "losses": str(result.losses),
            "step": result.step, "start_step": result.start_step, "last": result.rows[-1] if result.rows else {}}
