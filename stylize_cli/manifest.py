"""``stylize manifest build|validate``: build manifests from folders/prefixes, validate them."""
from __future__ import annotations

import json
import sys

from .argtypes import count, location


def register(subparsers) -> None:
    from stylecore.options import METHODS

    from .image import add_engine_options, add_weight_options
    from .main import HelpFormatter

    p = subparsers.add_parser("manifest", help="build and validate manifests of content/style pairs",
                              formatter_class=HelpFormatter,
                              description="Build a manifest from images on local disk or S3, or validate one.")
    sub = p.add_subparsers(dest="manifest_command", metavar="ACTION", required=True)

    b = sub.add_parser("build", help="pair content and style images into a manifest", formatter_class=HelpFormatter,
                       description="Pair content images with style images (files or folders/prefixes, local or "
                                   "s3://) and write a CSV, Parquet or JSON Lines manifest.")
    b.add_argument("--content", type=location, nargs="+", action="extend", required=True, metavar="URI_OR_PREFIX",
                   help="content images or folders/prefixes (recursive)")
    b.add_argument("--style", type=location, nargs="+", action="extend", required=True, metavar="URI_OR_PREFIX",
                   help="style images or folders/prefixes (recursive)")
    b.add_argument("--pairing", default="cross", help="cross | zip | sample:K")
    b.add_argument("--seed", type=int, default=0, help="seed for sample:K")
    b.add_argument("--label-from-parent", action="store_true", help="add a label column from each content's folder name")
    b.add_argument("--skip-done-under", type=location, metavar="OUTPUT_ROOT", default=None,
                   help="leave out pairs that already have outputs under this root (incremental augmentation)")
    b.add_argument("-o", "--output", type=location, required=True, metavar="MANIFEST", help="manifest to write (.csv, .parquet, .jsonl)")
    b.set_defaults(func=_build)

    v = sub.add_parser("validate", help="check a manifest and print a summary", formatter_class=HelpFormatter,
                       description="Validate a manifest: prints every problem (row and column) and exits 2, "
                                   "or prints a summary and exits 0.")
    v.add_argument("manifest", type=location, metavar="MANIFEST")
    v.add_argument("--check-inputs", action="store_true", help="also check that every input exists (S3: by listing key ranges; else parallel stat/HEAD)")
    v.add_argument("--method", type=str.lower, choices=METHODS, default="gatys",
                   help="default method for rows without a method column")
    v.add_argument("--format", dest="fmt", default="jpg", choices=("jpg", "png", "webp"), help="output format (keys)")
    v.add_argument("--output-root", type=location, metavar="URI", default=None,
                   help="also count rows whose output already exists there (skipped on resume); give the run's "
                        "--method, --format, weights and engine options, which enter the output keys")
    add_weight_options(v)
    v.add_argument("--max-problems", type=count, default=200, help="print at most this many problems (0: all)")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_engine_options(v)
    v.set_defaults(func=_validate)


def _build(args) -> int:
    from stylecore.manifest import manifest_format, write_manifest
    from stylecore.manifest_build import build_manifest

    from stylecore import uris

    manifest_format(args.output)  # fail on a bad extension or an unsupported scheme before listing anything
    uris.resolve(args.output)
    df = build_manifest(args.content, args.style, pairing=args.pairing, seed=args.seed,
                        label_from_parent=args.label_from_parent, skip_done_under=args.skip_done_under)
    notes = df.attrs.pop("notes", [])
    dest = write_manifest(df, args.output)
    if not len(df):
        notes.append("no pairs to stylize (every pair is done): the manifest has only its header, which "
                     "`stylize manifest validate` and `stylize run` refuse as empty")
    for note in notes:
        print(f"note: {note}")
    nc, ns = df["content"].nunique(), df["style"].nunique()
    print(f"wrote {len(df)} row{'s' if len(df) != 1 else ''} ({nc} content{'s' if nc != 1 else ''}, {ns} "
          f"style{'s' if ns != 1 else ''}, pairing {args.pairing}) to {dest}")
    return 0


def _validate(args) -> int:
    from stylecore.errors import ManifestError
    from stylecore.manifest import Prepared, load, plan, summary
    from stylecore.options import StyleOptions

    from .image import engine_overrides, resolve_encoder

    resolve_encoder(args)
    weights = {"encoder": args.encoder, "decoder": args.decoder, "model": args.model}
    options = StyleOptions.make(**engine_overrides(args))
    try:
        if args.output_root:
            p = plan(args.manifest, args.output_root, method=args.method, fmt=args.fmt, options=options,
                     check_inputs=args.check_inputs, **weights)
            prep = Prepared(p.rows, p.passthrough, [], p.notes)
        else:
            prep = load(args.manifest, method=args.method, fmt=args.fmt, options=options,
                        check_inputs=args.check_inputs, **weights)
    except ManifestError as e:
        problems = e.problems or [str(e)]
        shown = problems if args.max_problems <= 0 else problems[: args.max_problems]
        from stylecore.storage import scrub

        for line in shown:
            print(scrub(line), file=sys.stderr)
        if len(shown) < len(problems):
            print(f"... and {len(problems) - len(shown)} more problems", file=sys.stderr)
        print(f"error: {args.manifest}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 2
    from stylecore.run_checks import check_weights  # imports torch (~2 s): after the rows

    # the weight specs the rows' methods need, as `stylize run` checks them before it starts (its files too late)
    check_weights(set(prep.rows["method"]), weights, "local", files=False)
    s = summary(prep)
    if args.output_root:
        counts = prep.rows["status"].value_counts()
        s["pending"], s["skipped"] = int(counts.get("pending", 0)), int(counts.get("skipped", 0))
    s["notes"] = prep.notes
    if args.json:
        print(json.dumps(s))
    else:
        print(f"rows: {s['rows']}")
        print(f"distinct contents: {s['distinct_contents']}")
        print(f"distinct styles: {s['distinct_styles']}")
        print("methods: " + ", ".join(f"{m} {n}" for m, n in s["methods"].items()))
        if args.output_root:
            print(f"outputs under {args.output_root}: {s['skipped']} exist (skipped on resume), {s['pending']} to do")
        for note in prep.notes:
            print(f"note: {note}")
    return 0
