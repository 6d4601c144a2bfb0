"""``stylize run``: run the ``stylize-collection`` flow over a manifest.

Prefect runs ephemerally in this process unless ``PREFECT_API_URL`` points at a server. Exit codes:
0 when the failed rows are at most ``--max-failed``, 1 otherwise or when the Prefect API cannot be reached,
2 on usage or validation errors.
"""
from __future__ import annotations

import argparse
import os
import sys

from .argtypes import count, location, positive
from .image import _device, add_engine_options, add_weight_options, engine_overrides, resolve_encoder

# Options that are flow parameters of their own; every other engine option travels in ``options``.
NAMED_OPTIONS = ("size", "style_size", "steps", "alpha", "seed", "preserve_color")


def _max_failed(text: str) -> float:
    """A row count (``5``) or a fraction of the rows (``0.01``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected a count or a fraction in (0, 1))") from None
    if not value >= 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected a count >= 0 or a fraction in (0, 1))")
    return int(value) if value.is_integer() else value


SHOWN_PROBLEMS = 200  # manifest problems printed by `stylize run` (validate prints them all on request)


def register(subparsers) -> None:
    from stylecore.options import METHODS

    p = subparsers.add_parser(
        "run", help="stylize every row of a manifest (Prefect flow stylize-collection)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the stylize-collection flow: plan MANIFEST (rows whose outputs exist are skipped), split it\n"
                    "into shards, stylize them locally or on a Prefect work pool, and write metrics.parquet and\n"
                    "summary.json under the report folder (default OUTPUT/_reports/RUN_ID/).\n"
                    "Prefect runs ephemerally unless PREFECT_API_URL is set.\n\n"
                    "examples:\n"
                    "  stylize run pairs.csv --output out/ --method adain --encoder vgg.pth --decoder decoder.pth --size 512\n"
                    "  stylize run s3://bucket/pairs.parquet --output s3://bucket/styled/ --dispatch pool --max-failed 0.01")
    p.add_argument("manifest", type=location, metavar="MANIFEST", help="manifest (CSV, Parquet or JSON Lines): a path, file:// or s3:// URI")
    p.add_argument("-o", "--output", type=location, metavar="URI", required=True, help="output root (local folder or s3://bucket/prefix)")
    p.add_argument("--method", type=str.lower, choices=METHODS, default="gatys", help="default method (rows may override)")
    add_weight_options(p)
    p.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda,cuda:N}", help="device (default: auto)")
    p.add_argument("--format", choices=("jpg", "png", "webp"), default="jpg", help="output format (default: jpg)")
    run = p.add_argument_group("run options")
    run.add_argument("--shard-size", type=positive, default=None, metavar="N",
                     help="rows per shard (default: sized so a shard takes minutes: 32 for gatys, 5000 feed-forward)")
    run.add_argument("--dispatch", choices=("local", "pool"), default="local",
                     help="local: shards run in this process; pool: runs of the stylize-shard/POOL deployment")
    run.add_argument("--pool", default="gpu", metavar="NAME", help="shard deployment stylize-shard/NAME (default: gpu)")
    run.add_argument("--concurrency", type=positive, default=None, metavar="N",
                     help="shards in flight (default: 1 local, 4 pool)")
    run.add_argument("--batch-size", type=positive, default=None, metavar="N",
                     help="images per engine call (default: 8 on the CPU; on GPUs one full forward pass, 64 images at 256 px)")
    run.add_argument("--max-failed", type=_max_failed, default=0, metavar="N",
                     help="failed rows allowed for exit 0: a count or a fraction such as 0.01 (default: 0)")
    run.add_argument("--max-shard-retries", type=count, default=2, metavar="N", help="retries of a failed shard (default: 2)")
    run.add_argument("--overwrite", action="store_true", help="redo rows whose outputs already exist")
    run.add_argument("--report-dir", type=location, metavar="URI", default=None, help="report folder (default: OUTPUT/_reports/RUN_ID/)")
    run.add_argument("--no-quality", dest="quality", action="store_false", help="skip the per-row quality metrics")
    run.add_argument("--check-inputs", action="store_true", help="check that every input exists before starting")
    run.add_argument("-v", "--verbose", action="store_true", help="show Prefect's run logs")
    add_engine_options(p)
    p.set_defaults(func=run_command)


def flow_parameters(args: argparse.Namespace) -> dict:
    """The stylize-collection parameters for these arguments (same names, underscores)."""
    overrides = engine_overrides(args)
    params = {"manifest": args.manifest, "output": args.output, "method": args.method, "encoder": args.encoder,
              "decoder": args.decoder, "model": args.model, "device": args.device, "format": args.format,
              "shard_size": args.shard_size, "dispatch": args.dispatch, "pool": args.pool,
              "max_failed": args.max_failed, "max_shard_retries": args.max_shard_retries, "overwrite": args.overwrite,
              "report_dir": args.report_dir, "concurrency": args.concurrency, "batch_size": args.batch_size or 0,
              "quality": args.quality, "check_inputs": args.check_inputs}
    for name in NAMED_OPTIONS:
        params[name] = overrides.pop(name, None)
    params["options"] = overrides or None
    return params


def progress_seconds() -> float:
    """Seconds between plain progress lines when stderr is not a terminal: ``$STYLIZE_PROGRESS_SECONDS``
    (0 turns them off), default 60."""
    try:
        return max(0.0, float(os.environ.get("STYLIZE_PROGRESS_SECONDS", "60")))
    except ValueError:
        return 60.0


class _Bar:
    """Feeds progress events of the flow into the terminal progress bar."""

    def __init__(self, bar):
        self.bar = bar
        self.per_shard: dict[int, int] = {}
        self.skipped = 0

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            self.skipped = int(event.get("skipped", 0))
            self.bar.start_work()  # the rate counts from the first shard, not from the Prefect server's start
            self.bar.update(0, f"{self.skipped} skipped", total=int(event.get("total", 0)))
        elif kind in ("rows", "shard"):
            shard = int(event.get("shard", 0))
            self.per_shard[shard] = max(self.per_shard.get(shard, 0), int(event.get("done", 0)))
            self.bar.update(sum(self.per_shard.values()), f"{self.skipped} skipped" if self.skipped else "")


def print_summary(summary: dict, out=sys.stdout) -> None:
    """The run's counts, throughput and report location."""
    print(f"{summary.get('total', 0)} rows: {summary.get('ok', 0)} ok, {summary.get('failed', 0)} failed, "
          f"{summary.get('skipped', 0)} skipped in {summary.get('wall_seconds', 0):.1f} s "
          f"({summary.get('images_per_second') or 0:.2f} images/s, {summary.get('method')}, {summary.get('device') or '-'})",
          file=out)
    from .report import print_reasons

    print_reasons(summary, 5, out)
    from stylecore.report import quality_notes

    for note in [*(summary.get("manifest_notes") or []), *quality_notes(summary)]:
        print(f"note: {note}", file=out)
    print(f"report: {summary.get('report_dir')}", file=out)


def refuse_credentials(args: argparse.Namespace) -> None:
    """``StorageError`` for user info in the manifest, output, report folder or weight URIs (one line, redacted)."""
    from stylecore import uris
    from stylecore.errors import StorageError

    for value in (args.manifest, args.output, args.report_dir, args.encoder, args.decoder, args.model):
        if value and uris.has_userinfo(str(value)):
            raise StorageError(f"{uris.redact(str(value))}: {uris.NO_CREDENTIALS}")


def prefect_api_problem() -> str | None:
    """Reach the Prefect API before the run: ``PREFECT_API_URL``'s server, or the ephemeral one this process
    starts (kept for the run). ``None`` when it answers, else one line saying what to do."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL
    from stylecore import uris

    url = PREFECT_API_URL.value()
    where = f"the Prefect API at {uris.redact(url)}" if url else "the ephemeral Prefect server"
    hint = ("start that server (`prefect server start`) or unset PREFECT_API_URL to run ephemerally" if url else
            "set PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher, or start `prefect server start` and "
            "set PREFECT_API_URL to it")
    try:
        with get_client(sync_client=True) as client:
            error = client.api_healthcheck()
    except Exception as e:  # noqa: BLE001 - any failure to start or reach it is reported the same way
        error = e
    if error is None:
        return None
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    return f"cannot reach {where} ({reason}): {hint}"


_TERMINATED = []  # set once SIGTERM's line is printed (Prefect's handler may pass the signal on to ours)


def _stopping() -> None:
    import logging

    from stylecore import cancel

    cancel.cancel()
    logging.raiseExceptions = False  # the threads' last log records may meet a stopping interpreter: drop them


def _terminated() -> None:
    """SIGTERM: cancel the shards and say so once, as Ctrl-C does (exit 143 follows)."""
    _stopping()
    if not _TERMINATED:
        _TERMINATED.append(True)
        print("error: interrupted", file=sys.stderr, flush=True)


def install_stop_handlers() -> None:
    """Ctrl-C and SIGTERM stop the run within seconds. The local shards run in threads that Prefect's flow engine
    waits for before the interrupt reaches this code, so the handlers themselves cancel them
    (``stylecore.cancel``): a shard stops after its batch in progress, a Gatys row at its next step. SIGTERM
    exits through Python's shutdown (143), so the ephemeral Prefect server stops with us (after SIGKILL, the
    watcher of server_guard stops it). A second Ctrl-C is ignored: it used to abort the interpreter (SIGABRT)."""
    import signal

    def on_sigint(signum, frame):
        _stopping()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    def on_sigterm(signum, frame):
        _terminated()
        sys.exit(143)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigterm)
    # During a flow run Prefect's own SIGTERM handler (raising TerminationSignal) replaces ours; it is looked up
    # as this module attribute when the run starts, so a wrapper there cancels the shards too. Without the
    # attribute (another Prefect version), SIGTERM still stops the run, after the shard in progress.
    try:
        import prefect.utilities.engine as engine
    except ImportError:  # pragma: no cover - Prefect is a dependency
        return
    prefect_handler = getattr(engine, "_prefect_sigterm_handler", None)
    if prefect_handler is not None and not getattr(prefect_handler, "_stylize_cancels", False):
        def cancelling(signum, frame):
            _terminated()
            return prefect_handler(signum, frame)

        cancelling._stylize_cancels = True
        engine._prefect_sigterm_handler = cancelling


def print_user_error(error: Exception, manifest: str) -> None:
    """``error: ...`` and, for a manifest, its first problems (one line each) on stderr."""
    print(f"error: {error}", file=sys.stderr)
    problems = getattr(error, "problems", []) or []
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"  ... and {len(problems) - SHOWN_PROBLEMS} more; `stylize manifest validate {manifest} "
              f"--max-problems 0` lists them all", file=sys.stderr)


def preflight(args: argparse.Namespace) -> None:
    """The flow's own first checks, run before Prefect starts (which takes 10-30 s): the options, the manifest's
    rows, the run settings and the weight specs the rows' methods need. Raises their one-line errors
    (``ManifestError`` with every problem). The flow checks again: a deployment's runs start without this."""
    from stylecore import manifest, uris
    from stylecore.errors import StorageError
    from stylecore.fsutil import nearest_existing
    from stylecore.options import StyleOptions

    for flag, value in (("-o", args.output), ("--report-dir", args.report_dir)):
        where = uris.resolve(value) if value else None
        path = where and not uris.is_s3(where) and nearest_existing(where)
        if path and os.path.isfile(path):
            raise StorageError(f"{flag} {value}: {path} is a file, not a folder")
    options = StyleOptions.make(**engine_overrides(args))
    engine = {"encoder": args.encoder or "imagenet", "decoder": args.decoder, "model": args.model}
    prep = manifest.load(args.manifest, method=args.method, options=options, fmt=args.format, **engine)
    from stylecore.run_checks import check_run_settings, check_weights  # imports torch (~2 s): after the rows

    params = flow_parameters(args)
    check_run_settings(**{k: params[k] for k in ("device", "dispatch", "shard_size", "concurrency",
                                                 "max_shard_retries", "batch_size", "max_failed")})
    # Specs only: which files must exist and load depends on the rows still to do, known once the flow plans
    # them (in this process; it checks them before any shard).
    check_weights(set(prep.rows["method"]), engine, args.dispatch, files=False)


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``stylize run``."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Prefect's 20 s default is too short for a first start (database migrations) on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # Run logs go to the Prefect server (and the UI); the terminal shows the progress bar and the summary.
    if not args.verbose:
        for handler in ("CONSOLE", "CONSOLE_FLOW_RUNS", "CONSOLE_TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_HANDLERS_{handler}_LEVEL", "CRITICAL")
    from stylecore.errors import ManifestError, RunFailed, StyleCoreError

    resolve_encoder(args)
    refuse_credentials(args)  # the flow run's parameters are stored by Prefect before the flow checks them
    try:
        preflight(args)
    except ManifestError as e:
        print_user_error(e, args.manifest)
        return 2
    install_stop_handlers()  # imports Prefect (~2 s): after the checks, so that a typo is reported at once
    from .server_guard import detach_ephemeral_server, guard_ephemeral_server

    detach_ephemeral_server()  # Ctrl-C in a terminal reaches this process, not the server it needs to stop cleanly
    problem = prefect_api_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    guard_ephemeral_server()  # a killed run does not leave the ephemeral server behind
    from flows.stylize_collection import stylize_collection
    from tasks import progress

    from .progress import ProgressBar

    tty = sys.stderr.isatty()
    with ProgressBar(0, "stylize run", enabled=tty, log_every=0 if tty else progress_seconds()) as bar:
        listener = _Bar(bar)
        progress.add_listener(listener)
        try:
            state = stylize_collection(**flow_parameters(args), return_state=True)
        finally:
            progress.remove_listener(listener)
    result = state.result(raise_on_failure=False)
    if isinstance(result, RunFailed):
        result = result.summary
    if isinstance(result, dict):
        print_summary(result)
        if state.is_failed():
            print(f"error: {result.get('failed')} row(s) failed; --max-failed allows {result.get('max_failed_rows')}",
                  file=sys.stderr)
            return 1
        return 0
    if isinstance(result, StyleCoreError):
        print_user_error(result, args.manifest)
        return 2
    if isinstance(result, BaseException):
        print(f"error: run failed: {type(result).__name__}: {' '.join(str(result).split())}", file=sys.stderr)
        return 1
    print(f"error: run ended {state.name}: {state.message}", file=sys.stderr)
    return 1
