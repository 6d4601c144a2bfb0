"""Exact, faster inference forms of the feed-forward networks' layers (used by ``Engine``: on the CPU, and on
CUDA as ``feedforward.CUDA_LAYERS`` names).

The rewrites compute the same sums as the original layers (only the fp32 rounding order changes) and
keep every parameter under its checkpoint key, so a converted network still loads/saves the public
``decoder.pth`` / TransformerNet layouts:

* ``UpsampleConv2d``: nearest 2× upsampling, ReflectionPad2d(1) and a 3×3 convolution, computed from
  the low-resolution input. Reflection padding of a nearest-upsampled image equals replicate padding of
  the original, so each of the four output phases is a 2×2 convolution of the replicate-padded input
  with summed taps: 16 instead of 36 multiply-adds per output pixel and channel (2.25× fewer).
* ``SpaceToDepthConv2d``: a convolution with few output channels (Johnson's last 32→3 9×9 layer) run
  on the 2×2 pixel-unshuffled input (4× the channels, a 5×5 kernel per output phase), which oneDNN
  runs about 2× faster than the 3-output-channel form although it does ~1.2× the multiply-adds.
* ``InstanceNorm2d`` via ``batch_norm`` per image: keeps channels_last (``F.instance_norm`` returns a
  contiguous tensor, and every following layer then pays a layout copy). In TransformerNet on the CPU it also
  applies the ReLU and the reflection pad that follow it, in one compiled kernel (``stylecore/native``).
* ReLUs run in place.
* ``WinogradConv2d`` (CPU only): wide 3×3 convolutions by Winograd F(4×4, 3×3), 4× fewer multiplies.
  Unlike the forms above it does not add the same products in another order: its transforms round
  differently, by ~1e-5 of the output's scale. The tile transforms are compiled C (``stylecore/native``)
  where a C compiler is available, else GEMMs in torch.
* ``ReflectionPad2d`` by slicing and concatenation: keeps channels_last (for CUDA; see ``channels_last_pads``).

Under ``torch.compile`` (``stylecore.ff_graphs``) the instance norms and reflection pads take their plain
forms, which the compiler fuses into its generated kernels.
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn


def _conv_like(conv: nn.Conv2d, cls):
    new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, bias=conv.bias is not None,
              device=conv.weight.device, dtype=conv.weight.dtype)
    new.weight, new.bias = conv.weight, conv.bias  # the same Parameters: state_dict keys and values unchanged
    return new


class UpsampleConv2d(nn.Conv2d):
    """``conv(reflection_pad1(upsample_nearest2x(x)))`` for a 3×3, stride-1 conv, by output phase."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "UpsampleConv2d":
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1:
            raise ValueError("UpsampleConv2d needs an unpadded 3x3 stride-1 convolution")
        new = _conv_like(conv, cls)
        new.prepare()
        return new

    def prepare(self) -> None:
        """Build the (4·out, in, 2, 2) phase kernels from ``weight`` (call again after changing the weights)."""
        with torch.no_grad():
            w = self.weight.detach().double()
            # Rows/columns: phase 0 reads (m-1, m, m) -> taps (w0, w1+w2); phase 1 reads (m, m, m+1) -> (w0+w1, w2).
            fold = [lambda t, d: torch.stack([t.select(d, 0), t.select(d, 1) + t.select(d, 2)], d),
                    lambda t, d: torch.stack([t.select(d, 0) + t.select(d, 1), t.select(d, 2)], d)]
            phases = [fold[px](fold[py](w, 2), 3) for py in (0, 1) for px in (0, 1)]
            k = torch.cat(phases).to(self.weight.dtype)
            self.register_buffer("phase_weight", k.contiguous(memory_format=_fmt(self.weight)), persistent=False)
            bias = None if self.bias is None else self.bias.detach().repeat(4)
            self.register_buffer("phase_bias", bias, persistent=False)
        if self.winograd_weight is not None:
            self.enable_winograd()

    winograd_weight = None  # set by enable_winograd (CPU inference with the compiled transforms)

    def enable_winograd(self) -> bool:
        """Compute the four phases as one 3×3 conv with 4·out channels (phase (py, px)'s 2×2 taps at rows py..py+1,
        columns px..px+1 of the 3×3 window over the replicate-padded input) by Winograd F(4×4, 3×3): 2.25
        instead of 4 multiplies per output value, and the compiled output transform writes the interleaved image
        directly (no phase copies). Only with the compiled transforms; returns whether it is enabled."""
        c, o = self.in_channels, self.out_channels
        if o % 16 or min(c, 4 * o) < WINOGRAD_MIN_CHANNELS_NATIVE or _native_transforms(c, 4 * o) is None:
            return False
        with torch.no_grad():
            k3 = torch.zeros(4 * o, c, 3, 3, dtype=torch.float64, device=self.weight.device)
            for p in range(4):
                py, px = divmod(p, 2)
                k3[p * o:(p + 1) * o, :, py:py + 2, px:px + 2] = self.phase_weight[p * o:(p + 1) * o].double()
            self.winograd_weight = _winograd_filters(k3).to(self.weight.dtype)
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        o = self.out_channels
        if self.winograd_weight is not None and _winograd_eligible(x):
            lib = _native_transforms(self.in_channels, 4 * o)
            if lib is not None:
                out = torch.empty((n, 2 * h, 2 * w, o), dtype=x.dtype)
                _native_winograd(lib, x.permute(0, 2, 3, 1).contiguous(), self.winograd_weight, self.phase_bias, out,
                                 origin=-1, border=1, phase_ch=o)
                return out.permute(0, 3, 1, 2)
        keep = self.keep_layout and not torch.compiler.is_compiling()
        y = self._phase_conv(replicate_pad1(x) if keep else F.pad(x, (1, 1, 1, 1), mode="replicate"))  # (n,4o,h+1,w+1)
        out = torch.empty((n, o, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=_fmt(x))
        if keep and _nhwc(y) and _nhwc(out):
            _interleave_phases(y, out)
            return out
        for p in range(4):
            py, px = divmod(p, 2)
            out[:, :, py::2, px::2] = y[:, p * o:(p + 1) * o, py:py + h, px:px + w]
        return out

    keep_layout = False  # the fused CUDA forms: a layout-keeping pad and one interleaving copy (fused_layers)

    def _phase_conv(self, xp: torch.Tensor) -> torch.Tensor:
        """The four phases' 2×2 convolutions of the replicate-padded input, as one conv with 4·out channels."""
        return F.conv2d(xp, self.phase_weight.to(xp.dtype), None if self.phase_bias is None else self.phase_bias.to(xp.dtype))


def _nhwc(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.permute(0, 2, 3, 1).is_contiguous()


def _interleave_phases(y: torch.Tensor, out: torch.Tensor) -> None:
    """``out[:, :, 2i+py, 2j+px] = y[:, (2py+px)·o + c, i+py, j+px]`` as one strided copy (both NHWC in memory): the
    source offset is linear in (n, i, py, j, px, c), so a single view reads all four phases."""
    n, o, h2, w2 = out.shape
    h, w = h2 // 2, w2 // 2
    yh = y.permute(0, 2, 3, 1)
    s_n, s_h, s_w, _ = yh.stride()
    src = yh.as_strided((n, h, 2, w, 2, o), (s_n, s_h, s_h + 2 * o, s_w, s_w + o, 1), yh.storage_offset())
    out.permute(0, 2, 3, 1).view(n, h, 2, w, 2, o).copy_(src)


def replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="replicate")`` in ``x``'s layout (CUDA's replicate pad returns NCHW, and the
    next convolution then converts it back)."""
    n, c, h, w = x.shape
    out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=_fmt(x))
    out[..., 1:h + 1, 1:w + 1] = x
    out[..., 1:h + 1, :1] = x[..., :1]
    out[..., 1:h + 1, w + 1:] = x[..., w - 1:]
    out[..., :1, :] = out[..., 1:2, :]
    out[..., h + 1:, :] = out[..., h:h + 1, :]
    return out


class SpaceToDepthConv2d(nn.Conv2d):
    """An unpadded stride-1 convolution computed on the 2×2 pixel-unshuffled input (same output)."""

    R = 2

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "SpaceToDepthConv2d":
        if conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1 or conv.dilation != (1, 1):
            raise ValueError("SpaceToDepthConv2d needs an unpadded stride-1 convolution")
        new = _conv_like(conv, cls)
        new.prepare()
        return new

    def prepare(self) -> None:
        """Build the (4·out, 4·in, K, K) kernel, K = ceil((k+1)/2), from ``weight``."""
        r, (kh, kw) = self.R, self.kernel_size
        o, c = self.out_channels, self.in_channels
        ky, kx = -(-(kh + r - 1) // r), -(-(kw + r - 1) // r)
        with torch.no_grad():
            w = self.weight.detach()
            # output channel (o, py, px) as pixel_shuffle expects; input channel (sy, sx, c) as _unshuffle gives
            k = torch.zeros(o, r, r, r, r, c, ky, kx, dtype=w.dtype, device=w.device)
            for py in range(r):
                for px in range(r):
                    for ty in range(kh):
                        qy, sy = divmod(py + ty, r)
                        for tx in range(kw):
                            qx, sx = divmod(px + tx, r)
                            k[:, py, px, sy, sx, :, qy, qx] = w[:, :, ty, tx]
            k = k.reshape(o * r * r, c * r * r, ky, kx)
            self.register_buffer("s2d_weight", k.contiguous(memory_format=_fmt(self.weight)), persistent=False)
            bias = None if self.bias is None else self.bias.detach().repeat_interleave(r * r)
            self.register_buffer("s2d_bias", bias, persistent=False)
        self._taps = (ky, kx)
        if self.winograd_weight is not None:
            self.enable_winograd()

    winograd_weight = None  # set by enable_winograd (CPU inference with the compiled transforms)

    def enable_winograd(self) -> bool:
        """Run the 5×5 space-to-depth conv by Winograd F(4×4, 5×5) (8×8 tiles: 64 instead of 400 multiplies per
        4×4 outputs and channel pair), its output transform writing the pixel-shuffled, cropped image directly.
        Needs the compiled transforms, 5×5 taps, input channels (4·in) a multiple of 16 and 4·out ≤ 16
        (Johnson's 32→3 last conv: 128 → 12). Returns whether it is enabled."""
        c, k = self.s2d_weight.shape[1], self.s2d_weight.shape[0]
        if self._taps != (5, 5) or c % 16 or k > 16 or _native_transforms(c, 16) is None:
            return False
        with torch.no_grad():
            u = _winograd_filters(self.s2d_weight.detach(), _G45)
            self.winograd_weight = F.pad(u, (0, 16 - k)).contiguous().to(self.weight.dtype)  # (64, c, 16)
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, (ky, kx) = self.R, self._taps
        h, w = x.shape[-2] - self.kernel_size[0] + 1, x.shape[-1] - self.kernel_size[1] + 1
        need_h, need_w = r * (-(-h // r) + ky - 1), r * (-(-w // r) + kx - 1)
        if (need_h, need_w) != tuple(x.shape[-2:]):  # odd output sizes: zero rows/cols only feed cropped outputs
            x = F.pad(x, (0, need_w - x.shape[-1], 0, need_h - x.shape[-2]))
        xs = _unshuffle(x, r)
        if self.winograd_weight is not None and _winograd_eligible(x):
            lib = _native_transforms(xs.shape[1], 16)
            if lib is not None:
                return self._winograd_forward(lib, xs, h, w)
        y = F.conv2d(xs, self.s2d_weight.to(x.dtype), None if self.s2d_bias is None else self.s2d_bias.to(x.dtype))
        return F.pixel_shuffle(y, r)[..., :h, :w]

    def _winograd_forward(self, lib, xs: torch.Tensor, h: int, w: int) -> torch.Tensor:
        r, (ky, kx) = self.R, self._taps
        xh = xs.permute(0, 2, 3, 1).contiguous()  # free: _unshuffle gives channels_last
        n, hs, ws, c = xh.shape
        ho, wo = hs - ky + 1, ws - kx + 1  # the space-to-depth output grid
        bias = None if self.s2d_bias is None else self.s2d_bias.detach().contiguous()
        bias_ptr = None if bias is None else bias.data_ptr()
        out = torch.empty((n, h, w, self.out_channels), dtype=xs.dtype)
        threads = torch.get_num_threads()

        def transform_in(i, r0, rows, tw, v):
            lib.stylecore_winograd45_input(xh[i].data_ptr(), hs, ws, xh.stride(1), xh.stride(2), c, 4 * r0, 0, rows,
                                           tw, 1, v.data_ptr(), threads)

        def transform_out(i, r0, rows, tw, m):
            lib.stylecore_winograd45_output_shuffle(m.data_ptr(), rows, tw, r0, bias_ptr, ho, wo, r, out[i].data_ptr(),
                                                    h, w, self.out_channels, threads)

        _winograd_passes(n, ho, wo, self.winograd_weight, transform_in, transform_out)
        return out.permute(0, 3, 1, 2)


# Winograd F(4×4, 3×3) (Lavin & Gray 2016): input, filter and output transforms for 6×6 input tiles.
_BT = torch.tensor([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                    [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=torch.float64)
_G = torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                   [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
                   dtype=torch.float64)
_BB, _AA = torch.kron(_BT, _BT).float(), torch.kron(_AT, _AT).float()  # (36, 36), (16, 36): 2-D transforms
# Winograd F(4×4, 5×5) filter transform (8×5) for points 0, ±1, ±2, ±1/2, ∞ (input and output transforms: winograd.c)
_G45 = torch.tensor([[f * p ** j for j in range(5)] for f, p in
                     [(1, 0), (-2 / 9, 1), (-2 / 9, -1), (1 / 90, 2), (1 / 90, -2), (32 / 45, 0.5), (32 / 45, -0.5)]]
                    + [[0, 0, 0, 0, 1]], dtype=torch.float64)
# Below these channel counts the transforms cost more than the 4× fewer multiplies save: with the compiled
# transforms (stylecore/native) from 64 channels, with the GEMM transforms from 128.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_CHANNELS_NATIVE = 64
WINOGRAD_CHUNK = 1 << 16  # tiles × channels per pass: bounded transform buffers (~9 MB) that stay in cache
# The compiled transforms need no gather buffer: smaller passes (≤ 2¹⁴ tiles × channels, ~2.4 MB per buffer) that
# stay in the cores' caches, but at least 128 tiles, so that the batched GEMM keeps enough rows. Measured per
# layer against 2¹⁶: 64→64 at 256² 12.9 vs 17.5 ms, 64→128 at 128² 5.5 vs 6.1 ms; 512→512 at 32² unchanged.
WINOGRAD_NATIVE_CHUNK = 1 << 14
WINOGRAD_NATIVE_MIN_TILES = 128


class WinogradConv2d(nn.Conv2d):
    """A 3×3, stride-1 convolution (no or zero padding) by Winograd F(4×4, 3×3) on the CPU in fp32.

    Each 4×4 output tile takes 36 instead of 144 multiplies per input/output channel pair: the input
    tiles and the filters are transformed (``B^T d B``, ``G g G^T``), multiplied as 36 batched GEMMs,
    and transformed back (``A^T m A``). The sum is mathematically the convolution; fp32 rounding differs
    from the direct form by ~1e-5 relative. Elsewhere (CUDA, autograd, compilation) it is a plain conv.
    The transforms run as compiled C (``stylecore/native/winograd.c``: separable, in place on the NHWC
    tensors) when channel counts are multiples of 16 and the kernels built, else as (36×36) and (16×36) GEMMs.
    """

    reflect = 0  # 1: the input is unpadded and the layer computes conv(ReflectionPad2d(1)(x)) (_winograd_convs)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, reflect_pad: bool = False) -> "WinogradConv2d":
        """The Winograd form of ``conv``; ``reflect_pad``: also apply the ReflectionPad2d(1) that precedes it
        (the compiled transforms read the border reflected, with no padded copy)."""
        if not _winograd_shape(conv) or (reflect_pad and conv.padding != (0, 0)):
            raise ValueError("WinogradConv2d needs a 3x3 stride-1 convolution with no or zero padding of 1")
        new = _conv_like(conv, cls)
        new.padding = conv.padding
        new.reflect = int(reflect_pad)
        new.prepare()
        return new

    def prepare(self) -> None:
        """Build the transformed filters (36, in, out) from ``weight`` (call again after changing the weights)."""
        with torch.no_grad():
            self.register_buffer("winograd_weight", _winograd_filters(self.weight.detach()).to(self.weight.dtype),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _winograd_eligible(x) or min(x.shape[-2:]) < 2:
            return super().forward(F.pad(x, (1, 1, 1, 1), mode="reflect") if self.reflect else x)
        c, k = self.in_channels, self.out_channels
        lib = _native_transforms(c, k)
        if self.reflect and lib is None:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        elif self.padding != (0, 0):
            x = F.pad(x, (1, 1, 1, 1))
        edge = 1 if self.reflect and lib is not None else 0  # rows/columns the transforms reflect themselves
        n, _, h, w = x.shape
        ho, wo = h + 2 * edge - 2, w + 2 * edge - 2
        th, tw = -(-ho // 4), -(-wo // 4)
        out = torch.empty((n, ho, wo, k), dtype=x.dtype, device=x.device)
        if lib is not None:
            self._native_forward(lib, x.permute(0, 2, 3, 1).contiguous(), out, -edge)
            return out.permute(0, 3, 1, 2)
        rows = max(1, WINOGRAD_CHUNK // (tw * max(c, k)))
        # zeros below and right so that the tiles cover the output (they only feed outputs that are cropped)
        if 4 * th + 2 > h or 4 * tw + 2 > w:
            x = F.pad(x, (0, 4 * tw + 2 - w, 0, 4 * th + 2 - h))
        xh = x.permute(0, 2, 3, 1).contiguous()  # NHWC (free for a channels_last input)
        _, s_h, s_w, _ = xh.stride()
        u = self.winograd_weight
        for i in range(n):
            for r0 in range(0, th, rows):
                r = min(rows, th - r0)
                t = r * tw
                d = xh[i, 4 * r0:].as_strided((6, 6, r, tw, c), (s_h, s_w, 4 * s_h, 4 * s_w, 1)).reshape(36, t * c)
                m = torch.bmm(torch.mm(_BB, d).view(36, t, c), u)
                y = torch.mm(_AA, m.view(36, t * k)).view(4, 4, r, tw, k).permute(2, 0, 3, 1, 4).reshape(4 * r, 4 * tw, k)
                rr = min(4 * r, ho - 4 * r0)
                dst = out[i, 4 * r0:4 * r0 + rr]
                if self.bias is None:
                    dst.copy_(y[:rr, :wo])
                else:
                    torch.add(y[:rr, :wo], self.bias, out=dst)
        return out.permute(0, 3, 1, 2)  # channels_last

    def _native_forward(self, lib, xh: torch.Tensor, out: torch.Tensor, origin: int) -> None:
        _native_winograd(lib, xh, self.winograd_weight, self.bias, out, origin)


def _winograd_filters(weight: torch.Tensor, g: torch.Tensor = _G) -> torch.Tensor:
    """``G w Gᵀ`` for every (out, in) r×r filter of ``weight`` (out, in, r, r), computed in float64, with the
    (α, r) filter transform ``g`` (default ``_G``: F(4×4, 3×3)): (α², in, out)."""
    k, c = weight.shape[:2]
    w = weight.double().reshape(k * c, -1)
    return (torch.kron(g, g).to(w.device) @ w.T).reshape(-1, k, c).transpose(1, 2).contiguous()


def _winograd_eligible(x: torch.Tensor) -> bool:
    """Inference on a CPU fp32 4-D tensor, outside autograd and compilation: where the Winograd forms run."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


def _native_winograd(lib, xh: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
                     origin: int, border: int = 0, phase_ch: int = 0) -> None:
    """Winograd F(4×4, 3×3) with the compiled transforms (``stylecore/native/winograd.c``), in passes of tile rows.

    ``xh`` (n, h, w, c) NHWC input; ``u`` (36, c, k) transformed filters; ``out`` (n, ho, wo, k) NHWC, or with
    ``phase_ch`` the (n, 2ho, 2wo, phase_ch) interleaved output of an upsampling conv's four phases. Tiles start
    at row/column ``origin`` and read outside the image through ``border`` (0 reflect, 1 replicate), so padding
    costs no copy; the input is read and the output written in place (no gather or scatter copies)."""
    n, h, w, c = xh.shape
    k = u.shape[2]
    ho, wo = (out.shape[1] // 2, out.shape[2] // 2) if phase_ch else (out.shape[1], out.shape[2])
    bias = None if bias is None else bias.detach().contiguous()  # kept referenced while C reads it
    bias_ptr = None if bias is None else bias.data_ptr()
    threads = torch.get_num_threads()

    def transform_in(i, r0, rows, tw, v):
        lib.stylecore_winograd_input(xh[i].data_ptr(), h, w, xh.stride(1), xh.stride(2), c, origin + 4 * r0, origin,
                                     rows, tw, border, v.data_ptr(), threads)

    def transform_out(i, r0, rows, tw, m):
        lib.stylecore_winograd_output(m.data_ptr(), k, rows, tw, r0, bias_ptr, out[i].data_ptr(), ho, wo, phase_ch,
                                      threads)

    _winograd_passes(n, ho, wo, u, transform_in, transform_out)


def _winograd_passes(n: int, ho: int, wo: int, u: torch.Tensor, transform_in, transform_out) -> None:
    """Run compiled Winograd transforms over ``n`` images with an ``ho`` × ``wo`` output grid of 4×4 tiles, in
    passes of tile rows (≤ ``WINOGRAD_NATIVE_CHUNK`` tiles × channels, ≥ ``WINOGRAD_NATIVE_MIN_TILES`` tiles):
    ``transform_in(i, r0, rows, tw, v)`` fills ``v`` (α², tiles, in) for image ``i``'s tile rows r0..r0+rows,
    the batched GEMM with the transformed filters ``u`` (α², in, out) gives ``m`` (α², tiles, out), and
    ``transform_out(i, r0, rows, tw, m)`` writes the result. The buffers are per-thread workspaces."""
    planes, c, k = u.shape
    th, tw = -(-ho // 4), -(-wo // 4)
    rows = min(th, max(1, -(-WINOGRAD_NATIVE_MIN_TILES // tw), WINOGRAD_NATIVE_CHUNK // (tw * max(c, k))))
    v_buf, m_buf = _workspace("v", planes * rows * tw * c), _workspace("m", planes * rows * tw * k)
    for i in range(n):
        for r0 in range(0, th, rows):
            r = min(rows, th - r0)
            t = r * tw
            v, m = v_buf[:planes * t * c].view(planes, t, c), m_buf[:planes * t * k].view(planes, t, k)
            transform_in(i, r0, r, tw, v)
            torch.bmm(v, u, out=m)
            transform_out(i, r0, r, tw, m)


_workspaces = threading.local()


def _workspace(name: str, numel: int) -> torch.Tensor:
    """A per-thread fp32 scratch buffer of at least ``numel`` elements, kept between calls: a fresh multi-MB
    allocation per layer came back from the OS as new pages, and touching them cost as much as the transform."""
    buf = getattr(_workspaces, name, None)
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=torch.float32)
        setattr(_workspaces, name, buf)
    return buf


def _native_transforms(c: int, k: int):
    """The compiled Winograd transforms when they apply (channel counts that are multiples of 16), else None."""
    if c % 16 or k % 16:
        return None
    from . import native
    return native.winograd()


def _winograd_shape(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding in ((0, 0), (1, 1))
            and conv.padding_mode == "zeros")


def winograd_applies(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain 3×3 stride-1 convolution wide enough for ``WinogradConv2d`` to pay off."""
    if not _winograd_shape(conv):
        return False
    c, k = conv.in_channels, conv.out_channels
    if min(c, k) >= WINOGRAD_MIN_CHANNELS:
        return True
    return min(c, k) >= WINOGRAD_MIN_CHANNELS_NATIVE and _native_transforms(c, k) is not None


def _replace_children(net: nn.Module, applies, make) -> None:
    """Replace, in place, every submodule ``c`` of ``net`` with ``applies(c)`` by ``make(c)``."""
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if applies(child):
                setattr(m, name, make(child))


def _winograd_convs(net: nn.Module, enabled: bool) -> None:
    """Winograd forms for the wide 3×3 convs of ``net``. A ReflectionPad2d(1) that feeds one directly (the next
    module of an ``nn.Sequential``, or a TransformerNet ConvLayer's ``reflection_pad``) becomes Identity and the
    conv applies it itself (``reflect_pad``): its transforms read the border reflected, with no padded copy."""
    if not enabled:
        return

    def absorbs(pad: nn.Module, conv: nn.Module) -> bool:
        return (type(pad) is nn.ReflectionPad2d and tuple(pad.padding) == (1, 1, 1, 1) and winograd_applies(conv)
                and conv.padding == (0, 0))

    for m in list(net.modules()):
        if isinstance(m, nn.Sequential):
            pairs = list(zip(list(m._modules), list(m._modules)[1:]))
        elif hasattr(m, "reflection_pad") and hasattr(m, "conv2d"):  # transformer_net.ConvLayer
            pairs = [("reflection_pad", "conv2d")]
        else:
            continue
        for a, b in pairs:
            if absorbs(m._modules[a], m._modules[b]):
                setattr(m, b, WinogradConv2d.from_conv(m._modules[b], reflect_pad=True))
                setattr(m, a, nn.Identity())
    _replace_children(net, winograd_applies, WinogradConv2d.from_conv)


def _unshuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    """Space-to-depth with channel order (sy, sx, c): one copy with c innermost, i.e. a channels_last result
    (``F.pixel_unshuffle``'s (c, sy, sx) order measured 6× slower on channels_last inputs)."""
    n, c, h, w = x.shape
    v = x.permute(0, 2, 3, 1).reshape(n, h // r, r, w // r, r, c).permute(0, 1, 3, 2, 4, 5)
    return v.reshape(n, h // r, w // r, r * r * c).permute(0, 3, 1, 2)


class InstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d (affine, no running stats) through ``batch_norm`` per image, keeping channels_last.

    ``fuse_relu_pad`` (TransformerNet on the CPU, see ``fast_transformer``) makes the layer also apply the ReLU
    and the reflection padding that follow it; the compiled kernel (``stylecore/native/instance_norm.c``) then
    does all three in two passes over the data. ``record`` / ``frozen`` serve ``johnson.instance_norm_stats``
    (tiling): a callable that receives each input's (mean, var), or the (mean, var) to normalise with instead.
    """

    relu = False
    pad = 0
    record = None
    frozen = None
    batched = False  # CUDA "fused" forms: the whole batch in three passes (see _batched)

    def fuse_relu_pad(self, relu: bool, pad: int) -> None:
        """Apply ReLU (``relu``) and then ReflectionPad2d(``pad``) to the normalised output."""
        self.relu, self.pad = bool(relu), int(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats or x.dim() != 4:
            return self._after(super().forward(x))
        if self.record is not None or self.frozen is not None:
            return self._after(self._with_stats(x))
        if self.batched and not torch.compiler.is_compiling():
            return self._after(self._batched(x))
        lib = _native_norm(x)
        if lib is not None and self.pad < min(x.shape[-2:]):
            n, c, h, w = x.shape
            xh = x.permute(0, 2, 3, 1).contiguous()
            out = torch.empty((n, h + 2 * self.pad, w + 2 * self.pad, c), dtype=x.dtype)
            weight = None if self.weight is None else self.weight.detach().contiguous()
            bias = None if self.bias is None else self.bias.detach().contiguous()
            threads = torch.get_num_threads()
            for i in range(n):
                lib.stylecore_instance_norm(xh[i].data_ptr(), h, w, c, None if weight is None else weight.data_ptr(),
                                            None if bias is None else bias.data_ptr(), self.eps, int(self.relu),
                                            self.pad, out[i].data_ptr(), threads)
            return out.permute(0, 3, 1, 2)
        if torch.compiler.is_compiling():
            return self._after(super().forward(x))  # the generated kernels keep the layout; the batch stays symbolic
        parts = [F.batch_norm(x[i:i + 1], None, None, self.weight, self.bias, True, 0.0, self.eps)
                 for i in range(x.shape[0])]
        return self._after(parts[0] if len(parts) == 1 else torch.cat(parts))

    def _batched(self, x: torch.Tensor) -> torch.Tensor:
        """All images at once: the mean (fp32 accumulation and result) and the variance (Welford) by two
        reductions over H×W, then ``x·scale + shift`` in fp32 per (image, channel), written in ``x``'s dtype and
        layout. A constant number of kernels, where one ``batch_norm`` per image and a concatenation launch
        ~3 per image and copy the output once more."""
        mean = x.mean((2, 3), dtype=torch.float32)
        var = torch.var_mean(x, (2, 3), correction=0)[0].float()
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight.float()
            shift = self.bias.float() - mean * scale
        else:
            shift = -mean * scale
        shift, scale = shift[..., None, None], scale[..., None, None]
        if torch.is_grad_enabled():  # out= does not take part in autograd
            return (x * scale + shift).to(x.dtype)
        return torch.addcmul(shift, x, scale, out=torch.empty_like(x))

    def _with_stats(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.frozen is None:
            mean, var = xf.mean((0, 2, 3)), xf.var((0, 2, 3), unbiased=False)
            self.record(mean, var)
            return super().forward(x)
        mean, var = (t.to(x.device, torch.float32).view(1, -1, 1, 1) for t in self.frozen)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.float().view(1, -1, 1, 1) + self.bias.float().view(1, -1, 1, 1)
        return y.to(x.dtype)

    def _after(self, y: torch.Tensor) -> torch.Tensor:
        if self.relu:
            y = F.relu(y, inplace=True)  # y is this layer's own fresh output
        if self.pad:
            y = F.pad(y, (self.pad,) * 4, mode="reflect")
        return y


def _native_norm(x: torch.Tensor):
    """The compiled instance norm for CPU fp32 inference, else None."""
    if not _winograd_eligible(x):
        return None
    from . import native
    return native.instance_norm()


class ReflectionPad2d(nn.ReflectionPad2d):
    """Reflection padding written into one output buffer of the input's layout (the interior copied once, then
    the four borders from flipped edge slices): the same values as ``F.pad(mode="reflect")``, and a
    channels_last input gives a channels_last output. (The earlier form, two concatenations of flipped
    slices, moved the image twice and took 5 ms instead of 0.22 ms for 32×256² on the CPU.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.padding
        if x.dim() != 4 or torch.compiler.is_compiling() or max(left, right) >= x.shape[-1] \
                or max(top, bottom) >= x.shape[-2]:
            return super().forward(x)  # compiled: the pad is index arithmetic inside the next fused kernel
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                          memory_format=_fmt(x))
        rows = slice(top, top + h)
        out[..., rows, left:left + w] = x
        if left:
            out[..., rows, :left] = x[..., 1:left + 1].flip(-1)
        if right:
            out[..., rows, left + w:] = x[..., w - right - 1:w - 1].flip(-1)
        if top:
            out[..., :top, :] = out[..., top + 1:2 * top + 1, :].flip(-2)
        if bottom:
            out[..., top + h:, :] = out[..., top + h - bottom - 1:top + h - 1, :].flip(-2)
        return out


def channels_last_pads(net: nn.Module) -> nn.Module:
    """Replace every ``nn.ReflectionPad2d`` of ``net`` in place by the layout-keeping ``ReflectionPad2d``
    (padding has no parameters: the state_dict is unchanged)."""
    _replace_children(net, lambda c: type(c) is nn.ReflectionPad2d, lambda c: ReflectionPad2d(tuple(c.padding)))
    return net


def _fmt(t: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous() else torch.contiguous_format


def _fast_norm(m: nn.InstanceNorm2d) -> InstanceNorm2d:
    new = InstanceNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                         device=m.weight.device if m.affine else None)
    if m.affine:
        new.weight, new.bias = m.weight, m.bias
    return new


def _inplace_relus(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True


def fast_transformer(net: nn.Module, winograd: bool = True) -> nn.Module:
    """Convert a TransformerNet in place for inference: phase upsampling convs, space-to-depth last conv,
    channels_last instance norms, Winograd residual convs (``winograd``: for CPU inference), in-place
    ReLUs. Same outputs, same state_dict."""
    from .transformer_net import UpsampleConvLayer

    _replace_children(net, lambda c: type(c) is nn.InstanceNorm2d, _fast_norm)
    for m in list(net.modules()):
        if isinstance(m, UpsampleConvLayer) and m.upsample == 2 and m.conv2d.kernel_size == (3, 3):
            m.conv2d = UpsampleConv2d.from_conv(m.conv2d)
            m.upsample, m.reflection_pad = None, nn.Identity()
            if winograd:
                m.conv2d.enable_winograd()
    last = net.deconv3.conv2d
    if last.out_channels <= 4 and type(last) is nn.Conv2d:
        net.deconv3.conv2d = SpaceToDepthConv2d.from_conv(last)
        if winograd:
            net.deconv3.conv2d.enable_winograd()
    _winograd_convs(net, winograd)
    _inplace_relus(net)
    if winograd:
        _fuse_norm_relu_pad(net)
    return net


def _fuse_norm_relu_pad(net: nn.Module, pads: bool = True) -> None:
    """TransformerNet on the CPU with the compiled instance norm: every norm applies the ReLU that follows it and
    the ReflectionPad2d of the next ConvLayer (conv2, conv3, deconv3; a residual block's conv2 unless Winograd
    already absorbed it); those ReLU and pad modules become Identity. One kernel then does in two passes what
    batch_norm, ReLU and pad did in five. (Every use of ``net.relu`` and ``block.relu`` follows a norm.)
    ``pads=False``: the ReLUs only (the CUDA ``fused`` forms, whose pads keep the layout themselves)."""
    from . import native
    from .transformer_net import ResidualBlock, TransformerNet

    norms = [getattr(net, f"in{i}", None) for i in range(1, 6)]
    if type(net) is not TransformerNet or (pads and native.instance_norm() is None) \
            or not all(isinstance(n, InstanceNorm2d) for n in norms):
        return

    def pad_of(layer: nn.Module) -> int:
        pad = getattr(layer, "reflection_pad", None) if pads else None
        if type(pad) is nn.ReflectionPad2d and len(set(pad.padding)) == 1:
            layer.reflection_pad = nn.Identity()
            return pad.padding[0]
        return 0

    for norm, nxt in zip(norms, [net.conv2, net.conv3, None, None, net.deconv3]):
        norm.fuse_relu_pad(True, pad_of(nxt) if nxt is not None else 0)
    net.relu = nn.Identity()
    for block in net.modules():
        if isinstance(block, ResidualBlock) and isinstance(block.in1, InstanceNorm2d):
            block.in1.fuse_relu_pad(True, pad_of(block.conv2))
            block.relu = nn.Identity()


def fast_decoder(dec: nn.Sequential, winograd: bool = True) -> nn.Sequential:
    """Convert an AdaIN ``decoder()`` Sequential in place: each (Upsample 2×, ReflectionPad2d(1), 3×3 conv)
    becomes one ``UpsampleConv2d`` at the conv's index (the other two become Identity); Winograd for the
    wide 3×3 convs (``winograd``: for CPU inference); ReLUs in place."""
    mods = list(dec.children())
    for i in range(len(mods) - 2):
        up, pad, conv = mods[i:i + 3]
        if (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.scale_factor in (2, 2.0, (2, 2), (2.0, 2.0))
                and isinstance(pad, nn.ReflectionPad2d) and tuple(pad.padding) == (1, 1, 1, 1)
                and type(conv) is nn.Conv2d and conv.kernel_size == (3, 3)):
            dec[i], dec[i + 1], dec[i + 2] = nn.Identity(), nn.Identity(), UpsampleConv2d.from_conv(conv)
            if winograd:
                dec[i + 2].enable_winograd()
    _winograd_convs(dec, winograd)
    _inplace_relus(dec)
    return dec


def fast_encoder(enc: nn.Module, winograd: bool = True) -> nn.Module:
    """An AdaIN encoder for inference: Winograd for the wide 3×3 convs (``winograd``: for CPU inference),
    ReLUs in place (every ReLU follows a convolution's fresh output)."""
    _winograd_convs(enc, winograd)
    _inplace_relus(enc)
    return enc
