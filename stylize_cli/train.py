"""``stylize train adain|johnson``: train feed-forward networks (AdaIN decoders, Johnson TransformerNets)."""
from __future__ import annotations

import argparse
import math
import sys

from .argtypes import location

MAX_SIDE = 8192  # crop, load and style sizes (the image reader's pixel limit is 64 MP)
MAX_SEED = 2**32 - 1  # the crop sampler keys its generators with 32-bit words


def _int(lo: int, hi: int | None = None):
    """argparse ``type=``: an integer in ``lo..hi`` (one error line otherwise)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            rule = f"must be >= {lo}" if hi is None else f"must be {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"{rule}, got {v}")
        return v

    parse.__name__ = "int"
    return parse


def _float(*, positive: bool):
    """argparse ``type=``: a finite float, > 0 (``positive``) or >= 0."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if v < 0 or (positive and v == 0):
            raise argparse.ArgumentTypeError(f"must be {'> 0' if positive else '>= 0'}, got {text!r}")
        return v

    parse.__name__ = "float"
    return parse


def _device(text: str) -> str:
    from stylecore.device import check_device_name
    from stylecore.errors import OptionsError

    try:
        return check_device_name(text)
    except OptionsError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Given(argparse.Action):
    """Store the value and note that the option was on the command line: ``--resume`` restores the others
    from the run's saved settings."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


class _GivenFlag(_Given):
    """``store_true`` that notes it was given."""

    def __init__(self, option_strings, dest, default=False, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, const=True, default=default, required=required, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, True, option_string)


_positive = _int(1)
_nonneg = _int(0)
_side = _int(1, MAX_SIDE)
_side0 = _int(0, MAX_SIDE)
_rate = _float(positive=True)
_weight = _float(positive=False)


def _common(p: argparse.ArgumentParser, *, steps: int, batch: int, lr: float, cw: float, sw: float, every: int) -> None:
    p.add_argument("--content", type=location, metavar="SRC", action=_Given,
                   help="content images: a folder or s3:// prefix (searched recursively), or a manifest's content "
                        "column (required, unless --resume)")
    p.add_argument("-o", "--out", "--output", dest="out", type=location, required=True, metavar="OUTDIR",
                   help="output folder: weights, train_state.pth, losses.csv")
    p.add_argument("--steps", action=_Given, type=_positive, default=steps, help="total optimisation steps")
    p.add_argument("--batch-size", action=_Given, type=_int(1, 4096), default=batch, help="crops per optimisation step")
    p.add_argument("--crop", action=_Given, type=_side, default=256, help="random crop size in pixels")
    p.add_argument("--lr", action=_Given, type=_rate, default=lr, help="Adam learning rate")
    p.add_argument("--content-weight", action=_Given, type=_weight, default=cw,
                   help="content loss weight (with --normalize-losses: about 1)")
    p.add_argument("--style-weight", action=_Given, type=_weight, default=sw,
                   help="style loss weight (with --normalize-losses: about 1 to 10)")
    p.add_argument("--seed", action=_Given, type=_int(0, MAX_SEED), default=0,
                   help=f"initialisation and crop seed, 0 to {MAX_SEED} (deterministic runs)")
    p.add_argument("--checkpoint-every", action=_Given, type=_positive, default=every, metavar="N",
                   help="write a checkpoint every N steps")
    p.add_argument("--log-every", action=_Given, type=_positive, default=10, metavar="N",
                   help="average and log the losses every N steps")
    p.add_argument("--workers", action=_Given, type=_int(1, 256), default=2, help="image decoding threads")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUTDIR from its training state, with its saved settings for the options "
                        "not given")
    p.add_argument("--device", action=_Given, type=_device, default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-step progress lines")


def register(subparsers) -> None:
    from stylize_cli.main import CLIParser, HelpFormatter

    train = subparsers.add_parser("train", help="train an AdaIN decoder or a Johnson fast-style network",
                                  description="Train feed-forward networks: AdaIN decoders and Johnson TransformerNets.",
                                  formatter_class=HelpFormatter)
    which = train.add_subparsers(dest="recipe", metavar="RECIPE", required=True, parser_class=CLIParser)

    a = which.add_parser("adain", help="train an AdaIN decoder (pytorch-AdaIN defaults)", formatter_class=HelpFormatter,
                         description="Writes OUTDIR/decoder.pth (public decoder.pth layout) for --method adain. "
                                     "The decoder works only with the encoder it was trained with (recorded in "
                                     "OUTDIR/train_state.pth): pass the same --encoder when stylizing with it; use "
                                     "pytorch-AdaIN's vgg_normalised.pth for decoders meant for its test.py.")
    _common(a, steps=160_000, batch=8, lr=1e-4, cw=1.0, sw=10.0, every=10_000)
    a.add_argument("--style", type=location, metavar="SRC", action=_Given,
                   help="style images: a folder or s3:// prefix (searched recursively), or a manifest's style column "
                        "(required, unless --resume)")
    a.add_argument("--encoder", action=_Given, default="imagenet", metavar="SPEC",
                   help="imagenet, random:SEED, vgg_normalised.pth or a torchvision vgg19 state_dict path/s3 URI; "
                        "stylize with the same --encoder")
    a.add_argument("--load-size", action=_Given, type=_side, default=512,
                   help="images are resized to this square before cropping")
    a.add_argument("--lr-decay", action=_Given, type=_weight, default=5e-5,
                   help="lr at step i is lr / (1 + lr_decay * i)")
    a.set_defaults(func=_run_adain)

    j = which.add_parser("johnson", help="train a Johnson TransformerNet for one style (fast_neural_style defaults)",
                         formatter_class=HelpFormatter,
                         description="Writes OUTDIR/model.pth (TransformerNet state_dict) for --method johnson.")
    _common(j, steps=40_000, batch=4, lr=1e-3, cw=1e5, sw=1e10, every=2_000)
    j.add_argument("--style", type=location, metavar="IMAGE", action=_Given,
                   help="the style image (required, unless --resume)")
    j.add_argument("--style-size", action=_Given, type=_side0, default=0,
                   help="resize the style's longer side (0 keeps it)")
    j.add_argument("--loss-network", action=_Given, default="imagenet", metavar="SPEC",
                   help="imagenet (torchvision VGG16), random:SEED, or a torchvision vgg16 state_dict path/s3 URI")
    j.add_argument("--load-size", action=_Given, type=_side0, default=0,
                   help="shorter side before cropping (0: the crop size)")
    j.add_argument("--normalize-losses", action=_GivenFlag,
                   help="divide each loss term by its target's mean square (for random:SEED loss networks; "
                        "then use weights near 1)")
    j.add_argument("--color-weight", action=_Given, type=_weight, default=0.0,
                   help="weight of an extra Gram term on the RGB input (colour mean/covariance toward the style)")
    j.add_argument("--content-luminance", action=_GivenFlag,
                   help="content loss on luminance only (recolouring is not counted as a content change)")
    j.add_argument("--histogram-weight", action=_Given, type=_weight, default=0.0,
                   help="weight of a sliced-Wasserstein loss between the output's and the style's colour distributions")
    j.add_argument("--edge-weight", action=_Given, type=_weight, default=0.0,
                   help="weight of a loss between the luminance gradients of output and content (keeps edges)")
    j.set_defaults(func=_run_johnson)


def _fields(args) -> dict:
    return dict(content=args.content, style=args.style, out_dir=args.out, steps=args.steps, batch_size=args.batch_size,
                crop=args.crop, lr=args.lr, content_weight=args.content_weight, style_weight=args.style_weight,
                seed=args.seed, checkpoint_every=args.checkpoint_every, log_every=args.log_every, workers=args.workers,
                device=args.device, load_size=args.load_size)


def _settings(args, fields: dict) -> dict:
    """The config fields. With ``--resume``, the options not on the command line take the run's saved values
    (and a line says which differ from the defaults); without, ``--content`` and ``--style`` are required."""
    from stylecore.errors import OptionsError

    if not args.resume:
        missing = [f"--{k}" for k in ("content", "style") if fields[k] is None]
        if missing:
            raise OptionsError(f"the following arguments are required: {', '.join(missing)} "
                               f"(or --resume, to continue the run in -o)")
        return fields
    from stylecore.storage import scrub
    from stylecore.training.checkpoint import STATE_FILE
    from stylecore.training.loop import MACHINE, resume_settings

    given = getattr(args, "given", frozenset())
    merged = resume_settings(args.out, {k: v for k, v in fields.items() if k in given or k in MACHINE}, args.recipe)
    restored = {k: v for k, v in merged.items() if k in fields and k not in given and v != fields[k]}
    if restored and not args.quiet:
        print(scrub(f"resume: from {args.out}/{STATE_FILE}: " + ", ".join(f"{k}={v}" for k, v in restored.items())),
              file=sys.stderr)
    return merged


def _report(result, args) -> int:
    last = result.rows[-1] if result.rows else {}
    print(f"wrote {result.weights} (step {result.step}; final loss {last.get('total', '?')}); "
          f"losses: {result.losses}; resume state: {result.state}")
    return 0


def _run_adain(args) -> int:
    from stylecore.training.adain import AdaINTrainConfig, train_adain
    from stylecore.training.loop import print_progress

    cfg = AdaINTrainConfig(**_settings(args, dict(encoder=args.encoder, lr_decay=args.lr_decay, **_fields(args))))
    return _report(train_adain(cfg, resume=args.resume, on_log=None if args.quiet else print_progress), args)


def _run_johnson(args) -> int:
    from stylecore.training.johnson import JohnsonTrainConfig, train_johnson
    from stylecore.training.loop import print_progress

    fields = dict(loss_network=args.loss_network, style_size=args.style_size, normalize_losses=args.normalize_losses,
                  color_weight=args.color_weight, content_luminance=args.content_luminance,
                  histogram_weight=args.histogram_weight, edge_weight=args.edge_weight, **_fields(args))
    cfg = JohnsonTrainConfig(**_settings(args, fields))
    return _report(train_johnson(cfg, resume=args.resume, on_log=None if args.quiet else print_progress), args)
