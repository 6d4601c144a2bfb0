"""``stylize image``: stylize one content image with one or more style images (or a Johnson model).

Every engine option in ``stylecore.options.SPECS`` becomes a flag (``steps`` -> ``--steps``); its default
and help text come from that table, so the CLI, the Python API and manifests never disagree.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from stylecore.options import METHODS, SPECS, coerce, parse_style_weights

from .argtypes import location

DEVICES = ("auto", "cpu", "cuda")


def _option_type(name: str):
    """argparse ``type=`` that parses a value with stylecore's own rules (one error line on failure)."""

    def parse(text: str):
        from stylecore.errors import OptionsError

        try:
            return coerce(name, text)
        except OptionsError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = SPECS[name].type.__name__
    return parse


def _quality(text: str) -> int:
    try:
        q = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r} (expected an integer 1-100)") from None
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"value {q} out of range (1-100)")
    return q


def _device(text: str) -> str:
    low = text.strip().lower()
    if low in DEVICES or (low.startswith("cuda:") and low[5:].isdigit()):
        return low
    raise argparse.ArgumentTypeError(f"unknown device {text!r}; expected one of auto, cpu, cuda, cuda:N")


def _spec_help(name: str) -> str:
    spec = SPECS[name]
    methods = "all methods" if len(spec.methods) == len(METHODS) else "/".join(m for m in METHODS if m in spec.methods)
    if spec.default is None or spec.type is bool:  # the help text says what None means; flags default to off
        default = ""
    elif isinstance(spec.default, float):
        default = f" (default: {spec.default:g})"
    else:
        default = f" (default: {spec.default})"
    return f"{spec.help} [{methods}]{default}"


def add_weight_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--encoder``, ``--decoder`` and ``--model`` (weight specs; shared by image, run and manifest validate)."""
    parser.add_argument("--encoder", metavar="SPEC", default=None,
                        help="VGG encoder weights: imagenet, random:SEED, a .pth path, file:// or s3:// (default: imagenet); "
                             "pytorch-AdaIN's public decoder.pth needs their vgg_normalised.pth here")
    parser.add_argument("--decoder", metavar="SPEC", default=None,
                        help="AdaIN decoder weights (.pth path, file://, s3://, random:SEED)")
    parser.add_argument("--model", metavar="SPEC", default=None,
                        help="Johnson TransformerNet weights (.pth path, file://, s3://, random:SEED, or "
                             "builtin:johnson_mosaic, the project's offline model)")


ADAIN_ENCODER_NOTE = ("note: --encoder is imagenet (torchvision VGG19) by default; an AdaIN decoder works only with "
                      "the encoder it was trained with: pytorch-AdaIN's decoder.pth needs --encoder vgg_normalised.pth")


def resolve_encoder(args: argparse.Namespace) -> None:
    """Fill in the default encoder (imagenet); an AdaIN decoder given without ``--encoder`` gets a note on stderr, as
    the public decoder.pth was trained on pytorch-AdaIN's vgg_normalised.pth and gives wrong images with imagenet."""
    if args.encoder is None:
        args.encoder = "imagenet"
        if args.decoder and not str(args.decoder).strip().lower().startswith("random"):  # decoders are AdaIN's
            print(ADAIN_ENCODER_NOTE, file=sys.stderr)


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Add one flag per engine option in SPECS (reusable by other subcommands, e.g. ``stylize run``)."""
    group = parser.add_argument_group("engine options (defaults from stylecore.options.SPECS)")
    for name, spec in SPECS.items():
        flag = "--" + name.replace("_", "-")
        if spec.type is bool:
            group.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=_spec_help(name))
            continue
        metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else {int: "N", float: "X"}.get(spec.type, "VALUE")
        group.add_argument(flag, dest=name, type=_option_type(name), default=None, metavar=metavar,
                           help=_spec_help(name))


def engine_overrides(args: argparse.Namespace) -> dict:
    """The engine options given on the command line (unset flags are left to the SPECS defaults)."""
    return {name: getattr(args, name) for name in SPECS if getattr(args, name, None) is not None}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "image", help="stylize one image", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stylize CONTENT with one or more STYLE images (Gatys, AdaIN) or a Johnson model, write OUT.\n"
                    "The output format follows OUT's extension: .jpg/.jpeg, .png or .webp.\n\n"
                    "examples:\n"
                    "  stylize image photo.jpg starry.jpg -o out.jpg --encoder random:0 --size 256 --steps 150\n"
                    "  stylize image photo.jpg a.jpg b.jpg -o out.png --style-weights 0.7,0.3 --preserve-color\n"
                    "  stylize image photo.jpg s.jpg -o out.jpg --method adain --encoder vgg_normalised.pth "
                    "--decoder decoder.pth\n"
                    "  stylize image photo.jpg -o out.jpg --method johnson --model mosaic.pth")
    p.add_argument("content", type=location, metavar="CONTENT", help="content image (path, file:// or s3://)")
    p.add_argument("styles", type=location, metavar="STYLE", nargs="*", help="style image(s); gatys and adain need at least one")
    p.add_argument("-o", "--output", type=location, metavar="OUT", required=True,
                   help="output image (.jpg, .png or .webp): a path, file:// or s3://")
    p.add_argument("--method", type=str.lower, choices=METHODS, default="gatys", help="stylization method (default: gatys)")
    add_weight_options(p)
    p.add_argument("--mask", metavar="MASK", default=None, help="AdaIN spatial control: a mask image assigning styles to regions")
    p.add_argument("--style-weights", metavar="W1,W2", default=None, help="blend weights of the style images (default: equal)")
    p.add_argument("--device", type=_device, default="auto", metavar="{auto,cpu,cuda,cuda:N}", help="device (default: auto: CUDA when available)")
    p.add_argument("--quality", type=_quality, default=95, metavar="Q", help="JPEG/WebP quality 1-100 (default: 95)")
    add_engine_options(p)
    p.set_defaults(func=run)


def describe_weights(engine, method: str) -> str:
    """Which weights a run used, for the user (never a credential: specs are paths or bucket/key URIs)."""
    from stylecore.weights import imagenet_cache_path, parse_spec

    cfg = engine.config

    def one(what: str, spec: str) -> str:
        ws = parse_spec(spec, what=what)
        if ws.kind == "imagenet":
            return f"{what} imagenet (torchvision VGG19_Weights.IMAGENET1K_V1, {imagenet_cache_path()})"
        if ws.kind == "random":  # an untrained encoder still transfers colour and texture; a decoder or model cannot
            return (f"{what} {ws.text} (random weights: lower-fidelity offline fallback)" if what == "encoder"
                    else f"{what} {ws.text} (random weights: untrained, the output is noise; for tests)")
        return f"{what} {ws.text}"

    if method == "johnson":
        return one("model", cfg.model) if cfg.model else "model (none)"
    parts = [one("encoder", cfg.encoder)]
    if method == "adain" and cfg.decoder:
        parts.append(one("decoder", cfg.decoder))
    return ", ".join(parts)


def read_input(value: str):
    """A local path as it is (the engine reads it); a ``file://`` or ``s3://`` image decoded here."""
    from stylecore import storage, uris
    from stylecore.images import load_image

    if uris.scheme_of(str(value)) is None:
        return value
    uri = uris.resolve(value)
    return load_image(storage.read_bytes(uri), name=uris.redact(str(value)))


def check_writable(path: str) -> None:
    """``StorageError`` when the local ``path`` cannot be created: its nearest existing ancestor is a file
    or is not writable, or ``path`` itself is a folder."""
    from stylecore.errors import StorageError
    from stylecore.fsutil import nearest_existing

    if os.path.isdir(path):
        raise StorageError(f"{path}: is a folder; give the output image's file name")
    parent = nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not os.path.isdir(parent):
        raise StorageError(f"{path}: cannot write: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"{path}: cannot write: {parent} is not writable")


def refuse_input_as_output(output: str, inputs: list[str]) -> None:
    """An output that is one of the command's inputs would replace it (a slip of ``-o photo.jpg``): refused."""
    from stylecore import uris
    from stylecore.errors import OptionsError

    for given in inputs:
        source = uris.resolve(str(given))
        same = source == output
        if not same and not uris.is_s3(source) and not uris.is_s3(output) and os.path.exists(output):
            try:
                same = os.path.samefile(source, output)
            except OSError:
                same = False
        if same:
            raise OptionsError(f"-o {uris.redact(output)}: is an input of this command ({uris.redact(str(given))}); "
                               f"writing there would replace it: choose another output name")


def run(args: argparse.Namespace) -> int:
    """Handler of ``stylize image``."""
    from stylecore.engine import Engine
    from stylecore import storage, uris
    from stylecore.keys import METHOD_SPECS
    from stylecore.errors import OptionsError
    from stylecore.images import encode_image, output_format, save_image

    from .progress import ProgressBar

    if args.method == "johnson":  # its style is baked into the model: a style given here would be ignored
        extra = [*args.styles, *(flag for flag, v in (("--style-weights", args.style_weights), ("--mask", args.mask))
                                 if v is not None)]
        if extra:
            raise OptionsError(f"method johnson takes no style image (its style is in --model); remove {', '.join(extra)}")
    unused = [f"--{role}" for role in ("decoder", "model")
              if getattr(args, role) and role not in METHOD_SPECS[args.method]]
    if unused:  # weights given for another method would be ignored
        raise OptionsError(f"method {args.method} uses no {' or '.join(unused)}; remove it, or choose the method that does")
    resolve_encoder(args)
    output_format(args.output)  # a bad extension fails before any work
    output = uris.resolve(args.output)
    if not uris.is_s3(output):
        check_writable(output)  # before the compute, not after it
    refuse_input_as_output(output, [args.content, *args.styles, *([args.mask] if args.mask else [])])
    if args.style_weights is not None and not args.style_weights.strip():
        raise OptionsError("--style-weights: empty; give one weight per style image (W1,W2,...) or leave it out")
    weights = parse_style_weights(args.style_weights, len(args.styles)) if args.style_weights else None
    overrides = engine_overrides(args)
    if args.mask is not None:
        overrides["mask"] = read_input(args.mask)
    content, styles = read_input(args.content), [read_input(s) for s in args.styles]
    tty = sys.stderr.isatty()
    engine = Engine(encoder=args.encoder, decoder=args.decoder, model=args.model, device=args.device, progress=tty)

    t0 = time.perf_counter()
    with ProgressBar(0, args.method, enabled=tty) as bar:
        def on_step(info) -> None:
            bar.update(info.step, f"loss {info.loss:.4g}", total=info.total)

        image = engine.stylize(content, styles, method=args.method, style_weights=weights,
                               callback=on_step, **overrides)
    elapsed = time.perf_counter() - t0
    try:
        if uris.is_s3(output):
            storage.write_bytes(output, encode_image(image, output, quality=args.quality))
        else:
            save_image(image, output, quality=args.quality)
    except OSError as e:
        print(f"error: {args.output}: cannot write ({e.strerror or e})", file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({image.width}x{image.height}, {args.method}, {elapsed:.1f} s)")
    print(f"weights: {describe_weights(engine, args.method)}")
    return 0
