"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

The data ships as a system package so that training, accuracy checks and tests need no download at
run time; this module only parses the IDX files it installs.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# Fixed (not per-subset) statistics of the 60k training pixels in [0, 1], so that every split and
# every subset is normalised identically and a checkpoint stays valid for any `limit`.
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

_FILE_PREFIX = {"train": "train", "test": "t10k"}
# IDX magic numbers: 0x00000803 = unsigned bytes, 3 dims; 0x00000801 = unsigned bytes, 1 dim.
_IMAGES_MAGIC, _LABELS_MAGIC = 0x803, 0x801


def _read_idx(path: Path, magic: int, limit: int | None) -> np.ndarray:
    """Parse a gzip'd IDX file (big-endian header of dims, then uint8 data), reading only `limit` items."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: Fashion-MNIST comes from Debian's package "
            "(`apt-get install dataset-fashion-mnist`)")
    with gzip.open(path, "rb") as f:
        header_magic = int.from_bytes(f.read(4), "big")
        if header_magic != magic:
            raise ValueError(f"{path}: IDX magic {header_magic:#x}, expected {magic:#x}")
        ndim = magic & 0xFF
        dims = [int.from_bytes(f.read(4), "big") for _ in range(ndim)]
        count = dims[0] if limit is None else min(limit, dims[0])
        item_size = int(np.prod(dims[1:], dtype=np.int64))
        data = f.read(count * item_size)
    if len(data) != count * item_size:
        raise ValueError(f"{path}: truncated, {len(data)} bytes for {count} items of {dims[1:]}")
    return np.frombuffer(data, dtype=np.uint8).reshape(count, *dims[1:])


def load_fashion_mnist(split: str = "train", limit: int | None = None,
                       root: Path | str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: float32 ``(N, 1, 28, 28)`` normalised with the fixed mean/std,
    and int64 labels in ``[0, 10)``; the first `limit` items of the split (the files' order)."""
    if split not in _FILE_PREFIX:
        raise ValueError(f"split must be one of {sorted(_FILE_PREFIX)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    root, prefix = Path(root), _FILE_PREFIX[split]
    pixels = _read_idx(root / f"{prefix}-images-idx3-ubyte.gz", _IMAGES_MAGIC, limit)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", _LABELS_MAGIC, limit)
    images = (pixels.astype(np.float32) / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    return images[:, None, :, :], labels.astype(np.int64)
