"""User errors end a flow run as Failed with their one-line message, not as a logged traceback."""
from __future__ import annotations

import functools
from typing import Any, Callable

from prefect import get_run_logger
from prefect.states import Failed

from stylecore.errors import StyleCoreError


def fail_plainly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a flow or task function so that a ``StyleCoreError`` (a bad manifest, option, weights file or URI, an
    S3 error: one-line messages that name the fault) ends the run Failed with that message, logged once as an
    error, instead of Prefect's traceback. A task's retries still apply (Prefect retries a returned Failed
    state), and the flow calling it gets the error raised. A direct call of a flow still raises the error;
    other exceptions keep their tracebacks."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StyleCoreError as e:
            message = f"{type(e).__name__}: {' '.join(str(e).split())}"
            get_run_logger().error("%s", message)
            return Failed(message=message, data=e)

    return wrapper
