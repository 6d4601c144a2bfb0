"""The Python API under inputs a caller can get wrong: one ``stylecore.errors`` exception naming the argument,
never a deep AttributeError; masks read the same way by ``stylize`` and ``stylize_batch``; ``get_engine``
keyed on every Engine argument."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import stylecore
from stylecore.engine import Request
from stylecore.errors import ImageError, OptionsError
from stylecore.options import StyleOptions
from tests.conftest import make_photo, make_texture


def test_nan_option_values_are_refused_not_defaults():
    """A Python NaN became the option's default (alpha=nan ran as alpha 1, size=nan as 512)."""
    for name in ("alpha", "size", "steps", "seed", "preserve_color"):
        with pytest.raises(OptionsError, match=f"option {name}: invalid value nan"):
            StyleOptions.make(**{name: float("nan")})
    assert StyleOptions.make(alpha=None).alpha == StyleOptions.make().alpha  # None is "not given"


def test_inputs_that_are_not_images_name_the_argument(ff_engine):
    content, style = make_photo(48, 40, seed=1), make_texture(40, seed=2)
    for bad in (None, 5, np.zeros((8, 8, 3), np.uint8)):
        with pytest.raises(ImageError, match=r"^content: expected a path, bytes, a file object or a PIL image"):
            ff_engine.stylize(bad, style, method="adain", size=0)
        if bad is not None:  # mask=None is no mask
            with pytest.raises(ImageError, match=r"^mask: expected a path"):
                ff_engine.stylize(content, [style, style], method="adain", size=0, mask=bad)
    with pytest.raises(ImageError, match=r"^styles: expected a style image or a list of them, got NoneType"):
        ff_engine.stylize(content, None, method="adain", size=0)
    buf = io.BytesIO()
    content.save(buf, format="PNG")
    a = ff_engine.stylize(bytearray(buf.getvalue()), style, method="adain", size=0)  # bytes in other containers
    b = ff_engine.stylize(memoryview(buf.getvalue()), style, method="adain", size=0)
    assert np.array_equal(np.asarray(a), np.asarray(ff_engine.stylize(buf.getvalue(), style, method="adain", size=0)))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    w = np.array([0.7, 0.3])  # weights as an array, as a list
    assert np.array_equal(np.asarray(ff_engine.stylize(content, [style, content], method="adain", size=0, style_weights=w)),
                          np.asarray(ff_engine.stylize(content, [style, content], method="adain", size=0,
                                                       style_weights=[0.7, 0.3])))


def test_batch_masks_are_read_as_stylize_reads_them(ff_engine):
    """``stylize`` composites a mask's alpha on white; ``Request.mask`` went straight to convert('L'), so a
    transparent mask chose the other style (44 levels apart)."""
    content = make_photo(48, 40, seed=3)
    red, blue = make_texture(48, seed=4), make_texture(48, seed=5).transpose(Image.Transpose.ROTATE_90)  # no resize
    mask = Image.new("RGBA", (48, 40), (0, 0, 0, 0))  # black, fully transparent: white after compositing
    mask.paste((0, 0, 0, 255), (24, 0, 48, 40))  # right half opaque black
    one = ff_engine.stylize(content, [red, blue], method="adain", size=0, mask=mask)
    opts = StyleOptions.make(size=0)
    [res] = ff_engine.stylize_batch([Request(content, [red, blue], method="adain", options=opts, mask=mask)])
    assert res.error is None and np.array_equal(np.asarray(res.image), np.asarray(one))
    [empty] = ff_engine.stylize_batch([Request(content, [red, blue], method="adain", options=opts,
                                               mask=Image.new("L", (0, 0)))])
    assert empty.image is None and empty.error == "mask: empty image (0x0 px)"
    bad = ff_engine.stylize_batch([Request(content, red, method="adain", options=opts),
                                   Request(content, [red], method="adain", options={"alpha": 1})])
    assert bad[0].error == "styles: expected a list of PIL images, got Image"
    assert bad[1].error.startswith("options: expected StyleOptions")


def test_get_engine_keys_on_every_engine_argument():
    """A first caller's max_pixels became every later caller's (get_engine keyed on the specs and device only)."""
    small = stylecore.get_engine(encoder="random:5", device="cpu", max_pixels=100)
    default = stylecore.get_engine(encoder="random:5", device="cpu")
    assert default is not small and default.max_pixels == stylecore.images.DEFAULT_MAX_PIXELS
    assert stylecore.get_engine(encoder="random:5", device="cpu", max_pixels=100) is small
    for bad in (-1, "1000", 1.5, True):
        with pytest.raises(OptionsError, match="max_pixels: .* is not a whole number of pixels >= 0"):
            stylecore.Engine(encoder="random:5", device="cpu", max_pixels=bad)
