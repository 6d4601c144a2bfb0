"""Image I/O: every input mode to RGB, EXIF orientation, bad files, the pixel limit, encoding by extension."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
from PIL import Image

from stylecore import images
from stylecore.errors import ImageError
from stylecore.images import (DEFAULT_MAX_PIXELS, encode_image, load_image, resize_long_side, save_image,
                              to_pil, to_tensor)
from tests.conftest import make_photo, make_texture


def _roundtrip(img: Image.Image, path, **save) -> Image.Image:
    img.save(path, **save)
    return load_image(path)


def _px(img: Image.Image, xy=(0, 0)):
    assert img.mode == "RGB"
    return img.getpixel(xy)


def test_l_and_la(tmp_path):
    assert _px(_roundtrip(Image.new("L", (4, 3), 100), tmp_path / "l.png")) == (100, 100, 100)
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (100, 0))  # fully transparent -> white
    la.putpixel((1, 0), (100, 255))  # opaque -> its grey
    out = _roundtrip(la, tmp_path / "la.png")
    assert _px(out, (0, 0)) == (255, 255, 255) and _px(out, (1, 0)) == (100, 100, 100)


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    out = _roundtrip(p, tmp_path / "p-transparent.png", transparency=0)
    assert Image.open(tmp_path / "p-transparent.png").mode == "P"
    assert _px(out, (0, 0)) == (255, 255, 255) and _px(out, (1, 0)) == (255, 0, 0)
    out = _roundtrip(p, tmp_path / "p.png")
    assert _px(out, (0, 0)) == (0, 0, 0) and _px(out, (1, 0)) == (255, 0, 0)
    gif = _roundtrip(p, tmp_path / "p.gif", transparency=0)
    assert _px(gif, (0, 0)) == (255, 255, 255) and _px(gif, (1, 0)) == (255, 0, 0)


def test_rgba_is_composited_on_white(tmp_path):
    out = _roundtrip(Image.new("RGBA", (3, 3), (255, 0, 0, 128)), tmp_path / "rgba.png")
    r, g, b = _px(out)
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1  # 0.5 red over white


def test_cmyk(tmp_path):
    out = _roundtrip(Image.new("CMYK", (3, 2), (0, 255, 255, 0)), tmp_path / "cmyk.tif")
    assert Image.open(tmp_path / "cmyk.tif").mode == "CMYK"
    assert _px(out) == (255, 0, 0)


def test_sixteen_bit_integer_and_float_modes(tmp_path):
    a16 = np.array([[0, 32896, 65535]], dtype=np.uint16)
    img16 = Image.fromarray(a16)
    assert img16.mode == "I;16"
    out = load_image(img16)
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]
    out = _roundtrip(img16, tmp_path / "gray16.png")  # 16-bit PNG (opens as I;16 or I)
    assert Image.open(tmp_path / "gray16.png").mode in ("I;16", "I")
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]
    i32 = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))  # 8-bit data in an I image
    out = _roundtrip(i32, tmp_path / "i32.tif")
    assert Image.open(tmp_path / "i32.tif").mode == "I"
    assert [_px(out, (x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    out = _roundtrip(f, tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert [_px(out, (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (4, 2), (0, 0, 255))
    img.putpixel((0, 0), (255, 0, 0))  # red top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100, subsampling=0)
    out = load_image(tmp_path / "rot.jpg")
    assert out.size == (2, 4)
    r, g, b = out.getpixel((1, 0))  # stored top-left ends up top-right after a clockwise turn
    assert r > 200 and b < 80


def test_truncated_and_non_image_files(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: cannot decode: truncated or corrupt file"):
        load_image(tmp_path / "cut.jpg")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:300])
    with pytest.raises(ImageError, match=r"cut\.png: cannot decode"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image"):
        load_image(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match=r"absent\.png: file not found"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match=r"^upload: not an image"):
        load_image(b"\x00\x01garbage", name="upload")


def test_pixel_limit(tmp_path):
    assert DEFAULT_MAX_PIXELS == 64_000_000
    Image.new("RGB", (20, 10)).save(tmp_path / "big.png")
    with pytest.raises(ImageError, match=r"big\.png: 20x10 = 0\.0 MP exceeds the pixel limit"):
        load_image(tmp_path / "big.png", max_pixels=199)
    assert load_image(tmp_path / "big.png", max_pixels=200).size == (20, 10)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own decompression-bomb guard stays on


@pytest.mark.parametrize("ext,fmt", [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".png", "PNG"), (".webp", "WEBP")])
def test_encode_by_extension(tmp_path, ext, fmt, photo):
    data = encode_image(photo, f"out{ext.upper()}")
    assert Image.open(io.BytesIO(data)).format == fmt
    save_image(photo, tmp_path / f"sub/out{ext}")
    back = Image.open(tmp_path / f"sub/out{ext}")
    assert back.format == fmt and back.size == photo.size
    assert [p.name for p in (tmp_path / "sub").iterdir()] == [f"out{ext}"]  # no temp files left behind
    if fmt == "PNG":
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(photo))


def _pillow_jpeg(img: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **params)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [95, 80])
def test_jpeg_bytes_are_pillows_through_a_bytesio(photo, quality):
    """The writers encode into an in-memory file descriptor (the GIL is released there): same bytes as Pillow
    writing into a BytesIO with the documented settings (4:4:4 at quality >= 90, optimised Huffman tables)."""
    rng = np.random.default_rng(0)
    for img in (photo, photo.resize((501, 37)), Image.fromarray(np.clip(
            np.asarray(photo.resize((300, 200)), dtype=float) + rng.normal(0, 30, (200, 300, 3)), 0, 255).astype(np.uint8))):
        want = _pillow_jpeg(img, quality=quality, subsampling=0 if quality >= 90 else 2, optimize=True)
        assert encode_image(img, "out.jpg", quality=quality) == want
        if sys.platform == "linux":  # the descriptor path itself, not a silent fallback to the BytesIO
            assert images._save_via_descriptor(img.convert("RGB"), format="JPEG", quality=quality,
                                               subsampling=0 if quality >= 90 else 2, optimize=True) == want


def test_a_noise_like_output_that_overflows_pillows_optimize_buffer_still_encodes():
    """Pillow gives an optimised JPEG 2 bytes per pixel of buffer; uniform noise at quality 95 needs more and failed
    the row ('broken data stream'). It is now written without optimised tables: the same pixels."""
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    with pytest.raises(OSError):
        _pillow_jpeg(noise, quality=95, subsampling=0, optimize=True)
    data = encode_image(noise, "noise.jpg")
    plain = _pillow_jpeg(noise, quality=95, subsampling=0)
    assert data == plain
    back = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
    assert np.abs(back - np.asarray(noise)).mean() < 12  # a real q95 encoding of the noise, not a blank image


def test_quality_and_bad_extension(photo):
    big = photo.resize((256, 192))
    assert len(encode_image(big, "a.jpg", quality=95)) > 1.5 * len(encode_image(big, "a.jpg", quality=30))
    with pytest.raises(ImageError, match=r"unsupported output extension '\.gif'"):
        encode_image(photo, "out.gif")
    with pytest.raises(ImageError, match=r"\(none\)"):
        encode_image(photo, "out")


def test_resize_and_tensor_roundtrip(photo):
    assert photo.size == (64, 48)
    assert resize_long_side(photo, 32).size == (32, 24)
    assert resize_long_side(photo.transpose(Image.Transpose.ROTATE_90), 32).size == (24, 32)
    assert resize_long_side(photo, 0) is photo
    t = to_tensor(photo)
    assert t.shape == (1, 3, 48, 64) and 0 <= t.min() and t.max() <= 1
    assert np.array_equal(np.asarray(to_pil(t)), np.asarray(photo))


def test_atomic_write_gives_normal_permissions(tmp_path, photo):
    import os

    from stylecore.fsutil import _UMASK, atomic_write_bytes

    save_image(photo, tmp_path / "new.png")
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o666 & ~_UMASK  # not mkstemp's 0600
    existing = tmp_path / "existing.bin"
    existing.write_bytes(b"old")
    os.chmod(existing, 0o640)
    atomic_write_bytes(existing, b"new")
    assert existing.read_bytes() == b"new" and existing.stat().st_mode & 0o777 == 0o640


def test_large_jpegs_decode_at_a_reduced_scale_for_the_requested_size(tmp_path, photo):
    from stylecore.images import load_resized

    big = photo.resize((800, 600), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    # the JPEG decodes at 1/4 scale: the smallest DCT scale whose long side is still >= 2 x 100
    assert load_image(tmp_path / "big.jpg", long_side=100).size == (200, 150)
    assert load_image(tmp_path / "big.jpg", long_side=400).size == (800, 600)  # 800 <= 2 x 400: full decode
    assert load_image(tmp_path / "big.png", long_side=100).size == (800, 600)  # not a JPEG
    fast = np.asarray(load_resized(tmp_path / "big.jpg", 100)).astype(int)
    full = np.asarray(resize_long_side(load_image(tmp_path / "big.jpg"), 100)).astype(int)
    assert fast.shape == full.shape == (75, 100, 3)
    assert np.abs(fast - full).mean() < 1.0 and np.abs(fast - full).max() <= 8
    assert load_resized(tmp_path / "big.jpg", 0).size == (800, 600)
    # EXIF orientation after the reduced decode: stored 800x600, shown 600x800
    exif = Image.Exif()
    exif[0x0112] = 6
    big.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    rot = load_resized(tmp_path / "rot.jpg", 100)
    assert rot.size == (75, 100)
    ref = resize_long_side(load_image(tmp_path / "rot.jpg"), 100)
    assert np.abs(np.asarray(rot).astype(int) - np.asarray(ref).astype(int)).mean() < 1.0
    # the pixel limit still applies to the file's full size
    with pytest.raises(ImageError, match="exceeds the pixel limit"):
        load_resized(tmp_path / "big.jpg", 100, max_pixels=100_000)


def test_png_level_follows_the_environment_and_stays_lossless(photo, monkeypatch):
    """PNG outputs use zlib level ``PNG_LEVEL`` (3), or ``$STYLIZE_PNG_LEVEL``; every level decodes to the same
    pixels, and a level that is not 0-9 is a one-line error naming the variable."""
    from stylecore.images import PNG_LEVEL

    img = make_texture(96, seed=5)

    def pillow(level: int) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    monkeypatch.delenv("STYLIZE_PNG_LEVEL", raising=False)
    assert PNG_LEVEL == 3 and encode_image(img, "a.png") == pillow(3) != pillow(6)
    sizes = {}
    for level in (0, 1, 9):
        monkeypatch.setenv("STYLIZE_PNG_LEVEL", f" {level} ")
        data = encode_image(img, "a.png")
        assert data == pillow(level)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), np.asarray(img))
        sizes[level] = len(data)
    assert sizes[0] > sizes[1] > sizes[9]
    for bad in ("10", "-1", "fast"):
        monkeypatch.setenv("STYLIZE_PNG_LEVEL", bad)
        with pytest.raises(ImageError, match=r"^STYLIZE_PNG_LEVEL='.*': expected a zlib level from 0 to 9$"):
            encode_image(img, "a.png")
    assert encode_image(img, "a.jpg")[:2] == b"\xff\xd8"  # other formats ignore it


def test_upscaling_past_the_pixel_limit_is_refused_before_resizing(tmp_path, photo):
    """The pixel limit applies to the resized target too: ``--size``/``style_size`` upscales are checked before
    any pixels are allocated (content and style, through the engine and the shard's image cache)."""
    import time

    from stylecore.engine import Engine
    from stylecore.images import load_resized
    from stylecore.shard import ImageCache

    photo.save(tmp_path / "c.png")  # 64x48
    assert load_resized(tmp_path / "c.png", 1000, max_pixels=1_000_000).size == (1000, 750)  # 0.75 MP: allowed
    t0 = time.perf_counter()
    with pytest.raises(ImageError) as ei:
        load_resized(tmp_path / "c.png", 60000, max_pixels=DEFAULT_MAX_PIXELS)  # a 2.7 GP image if resized
    assert time.perf_counter() - t0 < 2
    assert str(ei.value) == (f"{tmp_path / 'c.png'}: resizing to 60000x45000 = 2700.0 MP exceeds the pixel limit "
                             f"of 64.0 MP; use a smaller size")
    engine = Engine(encoder="random:0", device="cpu", max_pixels=1_000_000)
    with pytest.raises(ImageError, match=r"c\.png: resizing to 4000x3000 = 12\.0 MP exceeds the pixel limit of 1\.0 MP"):
        engine.load(tmp_path / "c.png", 4000)
    make_texture(40).save(tmp_path / "s.png")
    with pytest.raises(ImageError, match=r"s\.png: resizing to 2000x2000 = 4\.0 MP exceeds"):
        engine.stylize(tmp_path / "c.png", tmp_path / "s.png", size=64, style_size=2000, steps=1)
    cache = ImageCache(lambda uri: (tmp_path / uri).read_bytes(), 1_000_000, 1 << 20)
    with pytest.raises(ImageError, match=r"^c\.png: resizing to 4000x3000"):
        cache.get("c.png", 4000)
    assert cache.get("c.png", 32).size == (32, 24)


def test_default_style_size_follows_the_content_but_is_capped_for_strips():
    from stylecore.images import STYLE_FLOOR, style_long_side

    # ordinary shapes, up to 4:1: the content's long side, as before
    for wh in [(512, 384), (1920, 1080), (4000, 1000), (48, 40), (40, 48), (700, 700)]:
        assert style_long_side(wh) == max(wh)
    assert style_long_side((8000, 1000)) == round(2 * (8000 * 1000) ** 0.5) == 5657  # a square style: 4x the pixels
    assert style_long_side((3000, 16)) == STYLE_FLOOR == 512  # not 3000x3000 (9 MP) for 48 kP of content
    assert style_long_side((3000, 16), 2000) == 2000  # an explicit style_size is kept


def test_engine_resizes_styles_for_a_strip_to_the_capped_size(tmp_path):
    from stylecore.engine import Engine

    make_photo(1200, 12, seed=1).save(tmp_path / "strip.png")
    make_photo(40, 40, seed=2).save(tmp_path / "s.png")
    engine = Engine(encoder="random:0", decoder="random:1", device="cpu")
    sizes = []
    real = engine.load

    def load(source, size, **kw):  # the real loader, recording the sizes asked for
        img = real(source, size, **kw)
        sizes.append((str(source), img.size))
        return img

    engine.load = load
    out = engine.stylize(tmp_path / "strip.png", tmp_path / "s.png", method="adain", size=0)
    assert out.size == (1200, 12)
    assert sizes == [(str(tmp_path / "strip.png"), (1200, 12)), (str(tmp_path / "s.png"), (512, 512))]
