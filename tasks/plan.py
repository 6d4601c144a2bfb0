"""Planning task: validate a manifest and plan its rows (outputs that already exist are skipped)."""
from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from stylecore import manifest
from stylecore.errors import StyleCoreError
from stylecore.options import StyleOptions
from stylecore.storage import scrub


LOGGED_PROBLEMS = 200


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(manifest_uri: str, output: str, *, method: str, options: dict[str, Any], engine: dict[str, Any],
              fmt: str = "jpg", overwrite: bool = False, check_inputs: bool = False):
    """Validate and plan ``manifest_uri`` against ``output``; returns the ``manifest.Plan``.

    User errors (a ``ManifestError`` lists every problem at once) are not retried; they end the task Failed.
    """
    logger = get_run_logger()
    try:
        plan = manifest.plan(manifest_uri, output, method=method, options=StyleOptions.make(**options),
                             encoder=engine.get("encoder") or "imagenet", decoder=engine.get("decoder"),
                             model=engine.get("model"), fmt=fmt, overwrite=overwrite, check_inputs=check_inputs)
    except StyleCoreError as e:  # the run's log is where a deployment's user reads them: every problem, bounded
        for line in getattr(e, "problems", [])[:LOGGED_PROBLEMS]:
            logger.error("%s", scrub(line))
        if len(getattr(e, "problems", [])) > LOGGED_PROBLEMS:
            logger.error("... and %d more problem(s); `stylize manifest validate %s` lists them all",
                         len(e.problems) - LOGGED_PROBLEMS, manifest_uri)
        # a Failed state, not a raise: the flow gets the error (and ends with its one line), and no traceback
        # of a user error is logged
        return Failed(message=scrub(f"{type(e).__name__}: {' '.join(str(e).split())}"), data=e)
    for note in plan.notes:
        logger.warning("%s: %s", manifest_uri, note)
    rows = plan.rows
    skipped = int((rows["status"] == "skipped").sum())
    logger.info("planned %d row(s) from %s: %d to run, %d skipped (output exists)", len(rows), manifest_uri,
                len(rows) - skipped, skipped)
    return plan
