"""stylecore: the neural style transfer engine (PyTorch). It never imports Prefect.

Quick use::

    import stylecore
    img = stylecore.stylize("photo.jpg", "style.jpg", encoder="random:0", size=256, steps=100)

For many images, keep one ``Engine`` (or ``get_engine(...)``) and call ``engine.stylize`` repeatedly.
"""
from .engine import Engine, EngineConfig, get_engine, stylize
from .errors import ImageError, ManifestError, OptionsError, StorageError, StyleCoreError, WeightsError
from .gatys import StepInfo
from .images import encode_image, load_image, save_image
from .options import METHODS, StyleOptions

__all__ = [
    "Engine", "EngineConfig", "get_engine", "stylize", "StepInfo", "StyleOptions", "METHODS",
    "load_image", "save_image", "encode_image",
    "StyleCoreError", "ImageError", "WeightsError", "OptionsError", "StorageError", "ManifestError",
]
__version__ = "0.1.0"
