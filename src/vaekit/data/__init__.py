"""Data: standard datasets, the user's arrays and image folders, kept in memory as tensors."""

from __future__ import annotations

from pathlib import Path

from vaekit.data.batch import Batch, as_batch
from vaekit.data.dataset import Dataset, binarize, fixed_binarization
from vaekit.data.files import load_array, load_image_folder
from vaekit.data.idx import read_idx
from vaekit.data.standard import IDX_SOURCES, STANDARD_DATASETS, load_digits, load_idx_dataset
from vaekit.errors import DataError

__all__ = [
    "STANDARD_DATASETS",
    "Batch",
    "Dataset",
    "as_batch",
    "binarize",
    "fixed_binarization",
    "load_dataset",
    "read_idx",
]


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    verify: bool = True,
) -> Dataset:
    """Load ``name``: ``digits``, ``mnist``, ``fashion-mnist``, a ``.npy``/``.npz`` file, or a
    folder of images. MNIST-style data come from ``data_dir`` if given, else from the cache
    (downloaded once)."""
    path = Path(name)
    if image_size is not None and not path.is_dir():
        raise DataError(f"--image-size applies to image folders only, not to {name!r}")
    if name == "digits":
        return load_digits()
    if name in IDX_SOURCES:
        return load_idx_dataset(name, data_dir, verify)
    if path.suffix in (".npy", ".npz"):
        return load_array(path)
    if path.is_dir():
        return load_image_folder(path, image_size)
    raise DataError(
        f"unknown dataset {name!r}: use one of {', '.join(STANDARD_DATASETS)}, a .npy/.npz "
        "file or a folder of images"
    )
