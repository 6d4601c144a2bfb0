"""Argument types shared by the subcommands."""
from __future__ import annotations

import argparse


def location(text: str) -> str:
    """A path or URI argument: an empty one is a usage error (it would mean the current directory)."""
    if not str(text).strip():
        raise argparse.ArgumentTypeError("empty; give a path or an s3:// URI")
    return text
