from PIL import ImageOps

from stylecore.training.evaluate import colour_swd, gradient_correlation, gram_distance, ssim
from tests.conftest import make_photo, make_texture


def test_measures_separate_same_from_different():
    photo, texture = make_photo(64, 64, seed=1), make_texture(64, seed=3)
    assert colour_swd(photo, photo) < 1e-9 < colour_swd(photo, texture)
    assert colour_swd(photo, ImageOps.grayscale(photo).convert("RGB")) < colour_swd(photo, texture)
    assert gram_distance(photo, photo) < 1e-6 < gram_distance(texture, photo)
    assert abs(gradient_correlation(photo, photo) - 1) < 1e-9 and abs(ssim(photo, photo) - 1) < 1e-9
    # recolouring keeps the luminance edges; a different picture does not
    inverted = ImageOps.invert(photo)
    assert gradient_correlation(inverted, photo) > 0.9 > gradient_correlation(texture, photo)
    assert ssim(texture, photo) < 0.5
