"""Image I/O: decode any common mode to RGB, resize by the longer side, encode JPEG/PNG/WebP.

Pillow's decompression-bomb guard stays on; stylecore adds its own, lower pixel limit on top.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OUTPUT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
# zlib level of PNG outputs: 3 encodes AdaIN outputs 3.6-3.8x faster than Pillow's default 6 (25 vs 95 ms at 512
# px) for files 12-13% larger (bench/bench_encode.py); ``$STYLIZE_PNG_LEVEL`` (0-9) overrides it.
PNG_LEVEL = 3

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

# Truncated files must fail, never decode silently as grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _describe(source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<image bytes>"


def load_image(source: ImageSource, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
               long_side: int = 0) -> Image.Image:
    """Decode ``source`` (path, bytes, file object or PIL image) into an RGB PIL image.

    Applies the EXIF orientation and converts L, LA, P, RGBA (composited on white), CMYK and the
    16-bit/32-bit integer and float modes to RGB. Raises ImageError naming the file and the reason.
    ``long_side``: the size the caller resizes to next (0: none). A JPEG larger than twice that is then
    decoded at a reduced DCT scale (1/2, 1/4 or 1/8) that keeps its longer side at least ``2 * long_side``,
    so the result can be smaller than the file, never smaller than that (``load_resized`` does both steps).
    """
    label = _describe(source, name)
    if isinstance(source, Image.Image):
        return _finish(source, label, max_pixels)
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)
    if not isinstance(source, (str, os.PathLike, bytes)) and not hasattr(source, "read"):
        raise ImageError(f"{name or 'image'}: expected a path, bytes, a file object or a PIL image, "
                         f"got {type(source).__name__}")
    if isinstance(source, (str, os.PathLike)):
        try:
            fh: BinaryIO = open(source, "rb")
        except FileNotFoundError:
            raise ImageError(f"{label}: file not found") from None
        except IsADirectoryError:
            raise ImageError(f"{label}: is a directory, not an image file") from None
        except OSError as e:
            raise ImageError(f"{label}: cannot open ({e.strerror or e})") from None
        with fh:  # our handle: close it once the pixels are decoded
            return _open_and_finish(fh, label, max_pixels, long_side)
    return _open_and_finish(io.BytesIO(source) if isinstance(source, bytes) else source, label, max_pixels, long_side)


def load_resized(source: ImageSource, size: int, *, name: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """``load_image`` and ``resize_long_side`` to ``size`` (0 keeps the size). Large JPEGs decode at a reduced
    scale first (see ``load_image``): a 4000×3000 photo to 512 px took 47 instead of 123 ms, with the
    result within 0.16 levels on average (at most 2) of a full decode."""
    img = load_image(source, name=name, max_pixels=max_pixels, long_side=size)
    w, h = long_side_size(img.size, size)
    if max_pixels and w * h > max_pixels:  # checked before resizing: an upscale can be far over the limit
        raise ImageError(f"{_describe(source, name)}: resizing to {w}x{h} = {w * h / 1e6:.1f} MP exceeds the pixel limit "
                         f"of {max_pixels / 1e6:.1f} MP; use a smaller size")
    return resize_long_side(img, size)


def _open_and_finish(fh: BinaryIO, label: str, max_pixels: int, long_side: int = 0) -> Image.Image:
    try:
        img = Image.open(fh)
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: refused by Pillow's decompression-bomb guard ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{label}: cannot decode ({e or type(e).__name__})") from None
    return _finish(img, label, max_pixels, long_side)


def _finish(img: Image.Image, label: str, max_pixels: int, long_side: int = 0) -> Image.Image:
    """Pixel-limit check (before decoding the pixels), decode (reduced for a large JPEG, see ``load_image``),
    EXIF orientation, RGB."""
    w, h = img.size
    if max_pixels and w * h > max_pixels:
        raise ImageError(f"{label}: {w}x{h} = {w * h / 1e6:.1f} MP exceeds the pixel limit of {max_pixels / 1e6:.1f} MP")
    try:
        if long_side and img.format == "JPEG" and max(w, h) > 2 * long_side:
            scale = 2 * long_side / max(w, h)
            img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{label}: refused by Pillow's decompression-bomb guard ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower() or "broken data stream" in reason.lower():
            reason = f"truncated or corrupt file ({reason})"
        raise ImageError(f"{label}: cannot decode: {reason}") from None


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha is composited on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(img)
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif mode == "I":
            # 32-bit int images usually hold 16-bit data (e.g. 16-bit PNG); scale when it exceeds 8 bits.
            arr = arr / 257.0 if arr.max(initial=0) > 255 else arr
        else:  # F: floats in [0,1] are scaled to 8 bits, anything else is taken as 0..255
            arr = arr * 255.0 if arr.size and np.nanmax(arr) <= 1.0 else arr
        arr = np.nan_to_num(arr, nan=0.0)
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    return img.convert("RGB")


def long_side_size(wh: tuple[int, int], size: int) -> tuple[int, int]:
    """The (width, height) that ``resize_long_side`` gives an image of size ``wh``."""
    w, h = wh
    if not size or max(w, h) == size:
        return w, h
    scale = size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


STYLE_FLOOR = 512  # px: the smallest default style long side for very wide or tall contents


def style_long_side(content_wh: tuple[int, int], style_size: int | None = None) -> int:
    """The long side style images are resized to: ``style_size`` when given (0 keeps their size, as ``size`` 0 does
    for the content and pytorch-AdaIN's ``--style_size 0`` does), else the content's long side,
    capped at ``2·sqrt(content pixels)`` (at least ``STYLE_FLOOR``). The cap keeps a square style within 4× the
    content's pixels: it changes nothing up to a 4:1 content, and a 3000×16 strip gets a 512 px style instead of
    a 3000×3000 one (9 MP to encode for 48 kP of content)."""
    if style_size is not None:
        return int(style_size)
    w, h = content_wh
    return min(max(w, h), max(STYLE_FLOOR, round(2 * math.sqrt(w * h))))


def resize_long_side(img: Image.Image, size: int) -> Image.Image:
    """Resize so that the longer side is ``size`` pixels (0 or None keeps the original)."""
    new = long_side_size(img.size, size)
    if new == img.size:
        return img
    scale = size / max(img.size)
    return img.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0 if scale < 0.5 else None)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor of shape (1, 3, H, W) in [0, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Tensor (1,3,H,W) or (3,H,W) in [0, 1] -> RGB PIL image (rounded to the nearest level)."""
    t = tensor.detach().float()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError("to_pil expects a single image")
        t = t[0]
    arr = t.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def output_format(path: str) -> str:
    """Pillow format name for an output path, chosen by its extension."""
    ext = os.path.splitext(str(path))[1].lower()
    try:
        return OUTPUT_FORMATS[ext]
    except KeyError:
        raise ImageError(f"{path}: unsupported output extension {ext or '(none)'!r}; use .jpg, .png or .webp") from None


def png_level() -> int:
    """The zlib level of PNG outputs: ``$STYLIZE_PNG_LEVEL`` (0-9), else ``PNG_LEVEL``."""
    value = os.environ.get("STYLIZE_PNG_LEVEL", "").strip()
    if not value:
        return PNG_LEVEL
    if not value.isdigit() or int(value) > 9:
        raise ImageError(f"STYLIZE_PNG_LEVEL={value!r}: expected a zlib level from 0 to 9")
    return int(value)


def _save_via_descriptor(img: Image.Image, **params) -> bytes | None:
    """``img`` saved with ``params`` into an anonymous in-memory file (Linux ``memfd``), or None where there is none.

    Pillow's encoders write to a file that has a descriptor from C, without the GIL (``encode_to_file``); into a
    BytesIO they run chunk by chunk holding it. Two writer threads encoding 256-px JPEGs this way ran 2.0x one
    thread's rate, against 0.9x through a BytesIO, so the shard's writers encode in parallel. Same bytes."""
    create = getattr(os, "memfd_create", None)
    if create is None:
        return None
    try:
        fd = create("stylecore-encode", os.MFD_CLOEXEC)
    except OSError:  # e.g. a seccomp profile that forbids it
        return None
    with open(fd, "w+b") as f:  # closes fd
        img.save(f, **params)
        f.flush()
        return os.pread(fd, os.fstat(fd).st_size, 0)


def _encode_jpeg(img: Image.Image, **params) -> bytes:
    data = _save_via_descriptor(img, **params)
    if data is None:  # no memfd here: through a BytesIO, holding the GIL
        buf = io.BytesIO()
        img.save(buf, **params)
        data = buf.getvalue()
    return data


def encode_image(img: Image.Image, path: str, *, quality: int = 95) -> bytes:
    """Encode ``img`` in the format chosen by ``path``'s extension (JPEG/WebP use ``quality``, PNG
    ``png_level()``)."""
    fmt = output_format(path)
    level = png_level() if fmt == "PNG" else 0
    buf = io.BytesIO()
    if fmt == "JPEG":
        params = dict(format="JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2)
        rgb = img.convert("RGB")
        try:
            return _encode_jpeg(rgb, optimize=True, **params)
        except OSError:
            # Pillow sizes the buffer of an optimised JPEG at 2 bytes per pixel (1 below quality 95); noise-like
            # images need more, and libjpeg then fails ("Suspension not allowed here"). Without the optimised
            # Huffman tables the file is a little larger and decodes to the same pixels.
            return _encode_jpeg(rgb, optimize=False, **params)
    elif fmt == "WEBP":
        img.save(buf, format="WEBP", quality=int(quality), method=4)
    else:
        img.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def save_image(img: Image.Image, path: str | os.PathLike, *, quality: int = 95) -> None:
    """Encode and write ``img`` atomically to a local path."""
    from .fsutil import atomic_write_bytes

    atomic_write_bytes(Path(path), encode_image(img, str(path), quality=quality))


def is_image_name(name: str) -> bool:
    """True when ``name`` has an image extension stylecore reads."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
