"""Feed-forward throughput: stylecore's batched engine vs a plain one-image-at-a-time reference loop.

For adain and johnson at 256 and 512 px with batch sizes 1, 4 and 16 (and 64 on GPUs), on the current device, it prints
images per second of ``Engine.stylize_batch`` (contents × a few repeated styles, style cache cleared
before each measurement) and, in the same process on the same weights, of a loop equivalent to the
reference scripts: pytorch-AdaIN ``test.py`` (encode content and style, AdaIN, decode, per pair, under
``torch.no_grad``) and fast_neural_style ``stylize`` (one image through TransformerNet), both with the
networks loaded once and without file I/O. Weights are random, saved in the public checkpoint formats.

    python bench/bench_feedforward.py [--quick] [--device auto|cpu|cuda] [--images N] [--methods adain johnson]
        [--compile off default reduce-overhead] [--compile-batches 16] [--forms fast+pads fused+cudnn] [--repeat 3]

The img/s figures and ``ratio`` are the best of ``--repeat`` rounds; ``median`` is the median over the
rounds of each round's own ratio, the figure to trust on a shared machine whose speed drifts. In each round the reference loop and the engine (each
``--compile`` mode, ``stylecore.ff_graphs``) run one after the other on the same images, so that the slow
and fast phases of a shared machine fall on both sides of each ratio. The warm-up column includes
compilation; 'levels vs off' is the mean 8-bit difference from the first mode's images. ``--forms`` compares CUDA
layer forms (``STYLECORE_CUDA_LAYERS``) the same way, one engine per form and compile mode.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylecore.adain_net import ENCODER_RELU4_1, decoder as decoder_layout, normalised_vgg  # noqa: E402
from stylecore.engine import Engine, Request  # noqa: E402
from stylecore.feedforward import CUDA_LAYERS  # noqa: E402
from stylecore.johnson import load_transformer  # noqa: E402
from stylecore.options import StyleOptions  # noqa: E402


def _photo(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([x, y, 0.5 + 0.5 * np.sin(6 * (x + y) + seed)], -1) * 200 + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype("uint8"))


def _save_weights(root: Path) -> dict[str, str]:
    """Random checkpoints in the public formats (He-scaled so activations stay in range)."""
    torch.manual_seed(0)
    paths = {}
    for name, net in [("vgg_normalised.pth", normalised_vgg()), ("decoder.pth", decoder_layout())]:
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        torch.save(net.state_dict(), root / name)
        paths[name] = str(root / name)
    torch.save(load_transformer("random:0").state_dict(), root / "johnson.pth")
    paths["johnson.pth"] = str(root / "johnson.pth")
    return paths


def _to_tensor(img: Image.Image, device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return t[0].mul(255).add(0.5).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


class ReferenceAdaIN:
    """pytorch-AdaIN test.py's per-pair computation: vgg(content), vgg(style), AdaIN, decoder."""

    def __init__(self, paths, device):
        vgg = normalised_vgg()
        vgg.load_state_dict(torch.load(paths["vgg_normalised.pth"], weights_only=True))
        self.vgg = torch.nn.Sequential(*list(vgg.children())[:ENCODER_RELU4_1]).to(device).eval()
        self.dec = decoder_layout()
        self.dec.load_state_dict(torch.load(paths["decoder.pth"], weights_only=True))
        self.dec = self.dec.to(device).eval()
        self.device = device

    @staticmethod
    def _mean_std(f, eps=1e-5):
        n, c = f.shape[:2]
        var = f.view(n, c, -1).var(dim=2) + eps
        return f.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)

    def __call__(self, content: Image.Image, style: Image.Image) -> np.ndarray:
        with torch.no_grad():
            cf = self.vgg(_to_tensor(content, self.device))
            sf = self.vgg(_to_tensor(style, self.device))
            sm, ss = self._mean_std(sf)
            cm, cs = self._mean_std(cf)
            feat = (cf - cm) / cs * ss + sm
            return _to_uint8(self.dec(feat))


class ReferenceJohnson:
    """fast_neural_style's stylize: ToTensor()*255 -> TransformerNet -> clamp -> uint8."""

    def __init__(self, paths, device):
        from stylecore.transformer_net import TransformerNet

        self.net = TransformerNet()
        self.net.load_state_dict(torch.load(paths["johnson.pth"], weights_only=True))
        self.net = self.net.to(device).eval()
        self.device = device

    def __call__(self, content: Image.Image, style=None) -> np.ndarray:
        with torch.no_grad():
            y = self.net(_to_tensor(content, self.device) * 255)
            return y[0].clamp(0, 255).cpu().numpy().transpose(1, 2, 0).astype("uint8")


def _native_state() -> str:
    """Whether the engine's CPU layers run the compiled kernels (stylecore/native) or their torch forms."""
    from stylecore import native

    return "compiled" if native.winograd() is not None and native.instance_norm() is not None else "torch forms"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _round_ips(fns: dict, n: int, repeat: int, device) -> dict[str, list[float]]:
    """Images per second of each ``fns[name]()`` (each processes ``n`` images) in each of ``repeat`` rounds.
    The functions run in turn within every round, so a slow phase of a shared machine hits all of them
    alike instead of one figure, and each round gives a ratio measured under one condition."""
    ips = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            ips[name].append(n / (time.perf_counter() - t0))
    return ips


def run(args) -> None:
    tmp = tempfile.TemporaryDirectory()
    paths = _save_weights(Path(tmp.name))
    forms = args.forms or [CUDA_LAYERS]
    engines = {(mode if len(forms) == 1 else f"{f}/{mode}"):
               Engine(encoder=paths["vgg_normalised.pth"], decoder=paths["decoder.pth"], model=paths["johnson.pth"],
                      device=args.device, progress=False, compile=mode, cuda_layers=f)
               for f in forms for mode in args.compile}
    device = next(iter(engines.values())).device
    sizes = args.sizes or ([256] if args.quick else [256, 512])
    # on GPUs also 64: the engine's default forward pass at 256 px (stylecore.feedforward.GPU_BATCH_PIXELS)
    batches = args.batches or ([1, 4] if args.quick else [1, 4, 16] + ([64] if device.type == "cuda" else []))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"CUDA layers {' / '.join(forms)}; CPU kernels {_native_state()}; "
          f"{args.repeat} interleaved rounds per row")
    print(f"{'method':8} {'px':>4} {'batch':>5} {'compile':>15} {'images':>6} {'engine img/s':>13} {'reference img/s':>16} "
          f"{'ratio':>6} {'median':>7} {'warm-up s':>9} {'levels vs off':>13}")
    refs = {"adain": ReferenceAdaIN(paths, device), "johnson": ReferenceJohnson(paths, device)}
    styles = [_photo(256, 100 + i) for i in range(2)]
    for method in args.methods:
        for size in sizes:
            n = args.images or (128 if device.type == "cuda" and size <= 256 else 64 if device.type == "cuda"
                                else 8 if size == 512 else 16)
            contents = [_photo(size, i) for i in range(n)]
            style_imgs = [s.resize((size, size)) for s in styles]
            ref = refs[method]
            ref(contents[0], style_imgs[0])  # warm-up

            def reference_loop() -> None:
                for i, c in enumerate(contents):
                    ref(c, style_imgs[i % 2])

            opts = StyleOptions.make(size=0)
            reqs = [Request(c, [style_imgs[i % 2]] if method == "adain" else [], [f"style{i % 2}"], None, method, opts,
                            str(i)) for i, c in enumerate(contents)]
            for batch in batches:
                runs, results, warm = {"reference": reference_loop}, {}, {}
                for mode, engine in engines.items():
                    if engine.compile_mode != "off" and args.compile_batches and batch not in args.compile_batches:
                        continue
                    engine.max_batch = batch
                    if engine.device.type != "cpu":  # exactly this batch (the CPU keeps its pixel budget)
                        engine.batch_pixels = batch * size * size
                    t0 = time.perf_counter()
                    engine.stylize_batch(reqs[:batch])  # warm-up (allocator, kernels, compilation)
                    warm[mode] = time.perf_counter() - t0
                    results[mode] = []

                    def engine_run(engine=engine, out=results[mode]) -> None:
                        engine.style_cache.clear()  # each timed run encodes its styles again
                        out[:] = engine.stylize_batch(reqs)

                    runs[mode] = engine_run
                ips = _round_ips(runs, n, args.repeat, device)
                ref_ips = ips["reference"]
                eager_pixels = None
                for mode in warm:
                    errors = [r.error for r in results[mode] if r.error]
                    if errors:
                        raise SystemExit(f"engine ({mode}) failed: {errors[0]}")
                    pixels = np.stack([np.asarray(r.image, dtype=np.int16) for r in results[mode]])
                    levels = "" if eager_pixels is None else f"{np.abs(pixels - eager_pixels).mean():.3f}"
                    if eager_pixels is None:
                        eager_pixels = pixels
                    best, ref_best = max(ips[mode]), max(ref_ips)
                    per_round = float(np.median([e / r for e, r in zip(ips[mode], ref_ips)]))
                    print(f"{method:8} {size:>4} {batch:>5} {mode:>15} {n:>6} {best:>13.2f} {ref_best:>16.2f} "
                          f"{best / ref_best:>5.2f}x {per_round:>6.2f}x {warm[mode]:>9.1f} {levels:>13}", flush=True)
    tmp.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="256 px only, batch sizes 1 and 4")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--methods", nargs="+", default=["adain", "johnson"], choices=["adain", "johnson"],
                   help="methods to measure (default both)")
    p.add_argument("--sizes", type=int, nargs="+", help="image sizes (default 256 512)")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 1 4 16)")
    p.add_argument("--images", type=int, default=0,
                   help="contents per measurement (default 16/8 on the CPU, 128/64 on CUDA at 256/512 px)")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds per row; the best of each side is printed (default 3)")
    p.add_argument("--compile", nargs="+", default=["off"], metavar="MODE",
                   help="engine compile modes to compare, each against the same reference (default: off); "
                        "'levels vs off' is the mean 8-bit difference from the first mode's images")
    p.add_argument("--compile-batches", type=int, nargs="+", help="batch sizes measured for compiled modes (default all)")
    p.add_argument("--forms", nargs="+", metavar="FORMS",
                   help="CUDA layer forms to compare, e.g. fast+pads fused fused+cudnn (default: $STYLECORE_CUDA_LAYERS)")
    run(p.parse_args())


if __name__ == "__main__":
    main()
