"""Argument types shared by the subcommands."""
from __future__ import annotations

import argparse


def location(text: str) -> str:
    """A path or URI argument: an empty one is a usage error (it would mean the current directory)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("empty; give a path or an s3:// URI")
    return text


def count(text: str) -> int:
    """A whole number >= 0 (0 often means "all")."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} is negative; give 0 or more")
    return n
