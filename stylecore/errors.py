"""Exceptions raised by stylecore. Every message names the file, row or option at fault."""


class StyleCoreError(Exception):
    """Base class: a user-facing error with a one-line message."""


class ImageError(StyleCoreError):
    """An image could not be read, decoded or encoded."""


class WeightsError(StyleCoreError):
    """A weight spec could not be parsed or its weights could not be loaded."""


class OptionsError(StyleCoreError):
    """An engine option has an unknown name or an invalid value."""


class StorageError(StyleCoreError):
    """A URI could not be read, written or listed."""


class RunFailed(Exception):
    """A run finished and wrote its reports, but more rows failed than ``max_failed`` allows. ``summary`` is
    what the run returns when it passes (counts, report folder). Not a ``StyleCoreError``: nothing was wrong
    with the request, and the CLI exits 1 for it, not 2."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


class ReportError(Exception):
    """A run's shards ran, but its metrics or reports could not be read back or written (storage down at the
    end). Not a ``StyleCoreError``: the request was fine; the CLI exits 1, and a re-run skips written outputs."""


class ManifestError(StyleCoreError):
    """A manifest is invalid. ``problems`` lists every problem found, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])
