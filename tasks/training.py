"""Prefect task over stylecore training: one task is one whole training run (resumable)."""
from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

RECIPES = ("adain", "johnson")
_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def check_settings(config: type, settings: dict[str, Any], recipe: str) -> None:
    """One-line ``OptionsError`` for a setting of the wrong type (e.g. ``"steps": "2"`` from a deployment's
    parameters), before the config's own range checks compare it with numbers."""
    import typing

    from stylecore.errors import OptionsError

    hints = typing.get_type_hints(config)
    for key, value in settings.items():
        kind = hints.get(key)
        if kind not in _KINDS or value is None:
            continue  # an unknown key is the config's error to report
        ok = (isinstance(value, bool) if kind is bool else
              not isinstance(value, bool) and (isinstance(value, (int, float)) if kind is float else
                                               isinstance(value, kind)))
        if not ok:
            raise OptionsError(f"{recipe} training setting {key}: {value!r} is not {_KINDS[kind]}")


@task(name="train-network", persist_result=False, retries=0)
def train_network(recipe: str, settings: dict[str, Any], resume: bool = False) -> dict[str, Any]:
    """Run ``stylecore.training`` for ``recipe`` (adain or johnson) with the config fields in ``settings`` (with
    ``resume``, fields not given keep the run's saved values); returns the written paths, the final step and the
    last logged losses."""
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
    if resume and isinstance(settings.get("out_dir"), str):
        from stylecore.training.loop import resume_settings

        settings = resume_settings(settings["out_dir"], settings, recipe)  # settings not given: the run's saved ones
    check_settings(Config, settings, recipe)
    try:
        cfg = Config(**settings)
    except TypeError as e:
        raise OptionsError(f"{recipe} training settings: {e}") from None
    result = train(cfg, resume=resume, on_log=log)
    return {"weights": str(result.weights), "state": str(result.state), "losses": str(result.losses),
            "step": result.step, "start_step": result.start_step,
            "last": {k: (float(v) if k != "step" else int(v)) for k, v in (result.rows[-1] if result.rows else {}).items()}}
