"""Entry point of the ``stylize`` console script.

Each subcommand lives in its own module exposing ``register(subparsers)``; handlers import heavy
libraries (torch, prefect) lazily so that ``stylize --help`` stays fast.
Usage errors exit 2 with a single ``error: ...`` line on stderr and no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["image", "manifest", "run", "report", "train"]


class CLIParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors print one ``error: ...`` line and exit 2."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults in --help (unless the help already names one, or there is none to show) and keeps
    description line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return super()._get_help_string(action)


def build_parser() -> CLIParser:
    parser = CLIParser(prog="stylize", description="Batch neural style transfer (stylecore engine + Prefect flows).",
                       formatter_class=HelpFormatter)
    from stylecore import __version__

    parser.add_argument("--version", action="version", version=f"stylize {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"stylize_cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    import warnings

    from PIL import Image

    from stylecore.errors import StyleCoreError

    # Images over Pillow's warning threshold (89 MP) are refused by the pixel limit (64 MP by default) with one
    # error line, or by Pillow's own guard (DecompressionBombError, twice the threshold, still on); its warning
    # would print two more lines before that error.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except StyleCoreError as e:
        from stylecore.storage import scrub

        print(f"error: {scrub(' '.join(str(e).split()))}", file=sys.stderr)  # one line, never a credential
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        import errno

        if e.errno != errno.ENAMETOOLONG:
            raise
        from stylecore.storage import scrub

        print(f"error: {scrub(str(e.filename or ''))}: file name too long", file=sys.stderr)  # a path argument
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
