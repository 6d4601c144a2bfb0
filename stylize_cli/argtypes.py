"""Argument types shared by the subcommands."""
from __future__ import annotations

import argparse


def location(text: str) -> str:
    """A path or URI argument: an empty one is a usage error (it would mean the current directory)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("empty; give a path or an s3:// URI")
    return text


def _at_least(text: str, low: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected "
                                         f"{'a positive integer' if low == 1 else 'an integer >= 0'})") from None
    if n < low:
        raise argparse.ArgumentTypeError(f"value {n} must be >= {low}")
    return n


def count(text: str) -> int:
    """A whole number >= 0 (0 often means "all" or "none")."""
    return _at_least(text, 0)


def positive(text: str) -> int:
    """A whole number >= 1."""
    return _at_least(text, 1)
