"""Training images: folders, S3 prefixes or manifests, and deterministic random crops.

A batch is a pure function of ``(seed, step)``: image order is a per-epoch permutation drawn from the
seed, crop offsets come from a generator seeded with ``(seed, step, slot)``. Resuming at step N therefore
sees exactly the batches an uninterrupted run would, with no sampler state to save.
"""
from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ImageError, OptionsError, StorageError
from ..images import is_image_name, load_image


MANIFEST_EXTENSIONS = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")


def list_images(source: str | os.PathLike, *, what: str = "content") -> list[str]:
    """Image files under a folder or ``s3://`` prefix (recursive, sorted), the single image file ``source``,
    or the ``what`` column of a manifest (``.csv`` / ``.parquet`` / ``.jsonl``, local or ``s3://``)."""
    text = str(source)
    if text.lower().endswith(MANIFEST_EXTENSIONS):
        return manifest_images(text, what=what)
    if text.lower().startswith("s3://"):
        from .. import storage

        found = list(storage.list_prefix(text))
        if not found:
            raise OptionsError(f"--{what} {text}: no images found under this S3 prefix")
        return found
    p = Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()
    if p.is_file():
        if not is_image_name(p.name):
            raise OptionsError(f"--{what} {text}: not an image file (extensions: .jpg .png .webp ...)")
        return [str(p)]
    if not p.is_dir():
        raise OptionsError(f"--{what} {text}: no such file or folder")
    found = sorted(str(f) for f in p.rglob("*") if f.is_file() and is_image_name(f.name) and not f.name.startswith("."))
    if not found:
        raise OptionsError(f"--{what} {text}: no images found (searched recursively for .jpg .png .webp ...)")
    return found


def manifest_images(uri: str, *, what: str = "content") -> list[str]:
    """The distinct images named in a manifest's ``what`` column (``content`` or ``style``; cells may list
    several styles separated by ``|``), in first-seen order. Relative paths resolve against the manifest's
    folder, as ``stylize run`` resolves them. A manifest that pairs each content with several styles
    repeats it; each image is listed once, so every image weighs the same in an epoch."""
    from .. import uris
    from ..errors import ManifestError
    from ..manifest import read_manifest

    try:
        label = uris.resolve(uri)
        df = read_manifest(label)
    except (ManifestError, StorageError) as e:
        raise OptionsError(f"--{what} {uri}: {e}") from None
    if what not in df.columns:
        cols = ", ".join(map(str, df.columns)) or "none"
        raise OptionsError(f"--{what} {uri}: the manifest has no {what!r} column (columns: {cols})")
    base, seen = uris.parent(label), {}
    for row, cell in enumerate(df[what].tolist()):
        if cell is None or (isinstance(cell, float) and cell != cell):
            continue
        for part in str(cell).split("|"):
            part = part.strip()
            if not part:
                continue
            try:
                seen.setdefault(uris.resolve(part, base), None)
            except StorageError as e:
                raise OptionsError(f"--{what} {uri}: row {row}: {e}") from None
    if not seen:
        raise OptionsError(f"--{what} {uri}: its {what!r} column names no images")
    return list(seen)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


class CropSampler:
    """Random ``crop``×``crop`` crops of images resized first.

    ``resize`` is ``"square"`` (to load_size×load_size, as pytorch-AdaIN's train.py does) or ``"short"``
    (shorter side to load_size, keeping the aspect ratio, as fast_neural_style does). Returns float32
    (B, 3, crop, crop) tensors in [0, 1]. Decoded images are kept in a small LRU cache.
    """

    def __init__(self, paths: list[str], *, crop: int, load_size: int, batch_size: int, seed: int,
                 resize: str = "square", cache_images: int = 256, workers: int = 2, stream: int = 0):
        if crop <= 0 or load_size < crop:
            raise OptionsError(f"--crop {crop} must be > 0 and not larger than the load size {load_size}")
        if resize not in ("square", "short"):
            raise ValueError(f"resize must be square or short, got {resize!r}")
        self.paths, self.crop, self.load_size = list(paths), int(crop), int(load_size)
        self.batch_size, self.seed, self.resize, self.stream = int(batch_size), int(seed), resize, int(stream)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = int(cache_images)
        self._bad: set[int] = set()
        self._pool = ThreadPoolExecutor(max(1, workers)) if workers > 1 else None
        self._perm_epoch, self._perm = -1, np.arange(0)
        self._lock = threading.Lock()

    def _order(self, k: int) -> int:
        """Index of the k-th image drawn: a fresh permutation of all images per epoch."""
        n = len(self.paths)
        epoch, pos = divmod(k, n)
        with self._lock:
            if epoch != self._perm_epoch:
                self._perm_epoch, self._perm = epoch, _rng(self.seed, self.stream, 0xE90C, epoch).permutation(n)
            return int(self._perm[pos])

    def _image(self, idx: int) -> np.ndarray:
        with self._lock:
            if idx in self._cache:
                self._cache.move_to_end(idx)
                return self._cache[idx]
        path = self.paths[idx]
        if path.lower().startswith("s3://"):
            from .. import storage

            img = load_image(storage.read_bytes(path), name=path)
        else:
            img = load_image(path)
        if self.resize == "square":
            img = img.resize((self.load_size, self.load_size), Image.Resampling.BILINEAR)
        else:
            w, h = img.size
            s = self.load_size / min(w, h)
            img = img.resize((max(self.load_size, round(w * s)), max(self.load_size, round(h * s))), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
        with self._lock:
            self._cache[idx] = arr
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return arr

    def _candidates(self, k: int):
        """Images to try for the k-th draw: ``_order(k)``, then, should it be unreadable, every image once in
        an order drawn from ``(seed, stream, k)``. The first readable one is used, so the choice depends on the
        seed and k only (not on which images earlier draws found bad) and every image is tried before giving up."""
        first = self._order(k)
        yield first
        for idx in _rng(self.seed, self.stream, 0xBAD1, k >> 32, k).permutation(len(self.paths)):
            if idx != first:
                yield int(idx)

    def _crop(self, step: int, slot: int) -> np.ndarray:
        k = step * self.batch_size + slot
        last = None
        for idx in self._candidates(k):
            with self._lock:
                if idx in self._bad:
                    continue
            try:
                arr = self._image(idx)
            except (ImageError, StorageError) as e:
                last = e
                with self._lock:
                    new = idx not in self._bad
                    self._bad.add(idx)
                if new:
                    print(f"warning: skipping training image: {e}", file=sys.stderr)
                continue
            h, w = arr.shape[:2]
            r = _rng(self.seed, self.stream, step, slot)
            y, x = int(r.integers(0, h - self.crop + 1)), int(r.integers(0, w - self.crop + 1))
            return arr[y:y + self.crop, x:x + self.crop]
        detail = f" (last: {last})" if last else ""
        raise ImageError(f"none of the {len(self.paths)} training images could be read{detail}")

    def batch(self, step: int) -> torch.Tensor:
        """The batch of training step ``step`` (0-based), deterministic for the seed."""
        slots = range(self.batch_size)
        crops = list(self._pool.map(lambda s: self._crop(step, s), slots)) if self._pool else [self._crop(step, s) for s in slots]
        arr = np.stack(crops)
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False)
