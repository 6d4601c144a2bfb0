"""stylecore: the neural style transfer engine (PyTorch). It never imports Prefect.

Quick use::

    import stylecore
    img = stylecore.stylize("photo.jpg", "style.jpg", encoder="random:0", size=256, steps=100)

For many images, keep one ``Engine`` (or ``get_engine(...)``) and call ``engine.stylize`` repeatedly.

The public names below are imported lazily (PEP 562), so ``import stylecore.options`` or
``stylize --help`` does not pay for importing torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "engine", "EngineConfig": "engine", "get_engine": "engine", "stylize": "engine",
    "Request": "engine", "Result": "engine",
    "StepInfo": "gatys", "StyleOptions": "options", "METHODS": "options",
    "load_image": "images", "save_image": "images", "encode_image": "images",
    "StyleCoreError": "errors", "ImageError": "errors", "WeightsError": "errors", "OptionsError": "errors",
    "StorageError": "errors", "ManifestError": "errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'stylecore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
