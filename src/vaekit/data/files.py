"""The user's own data: a ``.npy``/``.npz`` array, or a folder of PNG/JPEG images.

Arrays: ``(N, D)`` vectors, ``(N, H, W)`` grey images, ``(N, H, W, C)`` or ``(N, C, H, W)``
images with 1, 3 or 4 channels. ``uint8`` is scaled to [0, 1]; bool and float are kept.
An ``.npz`` may hold ``x`` (and ``y``), or ``x_train``/``x_test`` (and ``y_train``/``y_test``).
Files are read with ``allow_pickle=False``: an array of Python objects is refused, never
unpickled. Image folders: every image in the folder and its sub-folders; sub-folder names
become labels.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from vaekit.checks import fits_in_memory, memory_bytes
from vaekit.data.dataset import Dataset, holdout_split
from vaekit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _as_examples(array: np.ndarray, where: str) -> np.ndarray:
    """Check dtype and rank; return float32 ``(N, D)`` or ``(N, C, H, W)``."""
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif array.dtype == np.bool_ or np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    else:
        raise DataError(
            f"{where}: unsupported dtype {array.dtype}; save the data as float32 (any range) "
            "or uint8 (0..255)"
        )
    if not np.isfinite(array).all():
        raise DataError(f"{where}: the data contain NaN or infinite values; clean them first")
    if array.ndim == 2:
        return array
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        if array.shape[1] in (1, 3, 4):
            return array
        if array.shape[3] in (1, 3, 4):
            return np.ascontiguousarray(array.transpose(0, 3, 1, 2))
        raise DataError(
            f"{where}: cannot tell the channel axis of shape {array.shape}; use (N, C, H, W) or "
            "(N, H, W, C) with 1, 3 or 4 channels"
        )
    raise DataError(
        f"{where}: array of rank {array.ndim} {array.shape}; expected (N, D), (N, H, W), "
        "(N, H, W, C) or (N, C, H, W)"
    )


def _labels(array: np.ndarray, n: int, where: str) -> np.ndarray:
    if array.ndim != 1 or len(array) != n or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"{where}: labels must be integers of shape ({n},), got {array.dtype} {array.shape}"
        )
    return array.astype(np.int64)


def _check_npy_header(stream: IO[bytes], available: int, where: str) -> None:
    """Refuse a ``.npy`` stream whose header is malformed, declares Python objects, or
    declares more data than ``available`` bytes, before numpy allocates anything."""
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = npy_format.read_array_header_2_0(stream)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as err:
        raise DataError(f"{where}: not a valid .npy array ({err})") from err
    if dtype.hasobject:
        raise DataError(
            f"{where}: holds Python objects (a pickle), which vaekit never loads; save a plain "
            "numeric array with numpy.save"
        )
    if math.prod(shape) * dtype.itemsize > available:
        raise DataError(f"{where}: truncated (its header declares more data than the file holds)")


def _member_bound(info: zipfile.ZipInfo) -> int:
    """The most bytes a member of an archive can hold: its stated size, but no more than its
    stored bytes allow (DEFLATE expands at most 1032:1) and than memory holds (a forged
    zip64 size must not make numpy allocate it)."""
    ratio = 1 if info.compress_type == zipfile.ZIP_STORED else 1032
    return min(info.file_size, info.compress_size * ratio, memory_bytes())


def load_array(path: str | Path) -> Dataset:
    """A dataset from a ``.npy`` or ``.npz`` file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    arrays: dict[str, np.ndarray] = {}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    key = info.filename.removesuffix(".npy")
                    with archive.open(info) as member:
                        _check_npy_header(member, _member_bound(info), f"{path}[{key}]")
                    with archive.open(info) as member:
                        arrays[key] = npy_format.read_array(member, allow_pickle=False)
        else:
            with path.open("rb") as stream:
                _check_npy_header(stream, path.stat().st_size, str(path))
                stream.seek(0)
                single = npy_format.read_array(stream, allow_pickle=False)
            return holdout_split(_as_examples(single, str(path)), None, path.stem)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as err:
        raise DataError(f"{path}: not a readable .npy/.npz file ({err})") from err
    if "x_train" in arrays and "x_test" in arrays:
        train_x = _as_examples(arrays["x_train"], f"{path}[x_train]")
        test_x = _as_examples(arrays["x_test"], f"{path}[x_test]")
        if train_x.shape[1:] != test_x.shape[1:]:
            raise DataError(f"{path}: x_train and x_test have different example shapes")
        labelled = "y_train" in arrays and "y_test" in arrays
        return Dataset(
            path.stem,
            torch.from_numpy(train_x),
            torch.from_numpy(test_x),
            torch.from_numpy(_labels(arrays["y_train"], len(train_x), f"{path}[y_train]"))
            if labelled
            else None,
            torch.from_numpy(_labels(arrays["y_test"], len(test_x), f"{path}[y_test]"))
            if labelled
            else None,
            train_scale=_scales(arrays, train_x, path),
        )
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise DataError(
            f"{path}: cannot tell which array is the data (keys {sorted(arrays)}); name it 'x' "
            "(labels 'y'), or use x_train/x_test"
        )
    x = _as_examples(arrays[key], f"{path}[{key}]")
    y = _labels(arrays["y"], len(x), f"{path}[y]") if "y" in arrays else None
    return holdout_split(x, y, path.stem)


def _scales(arrays: dict[str, np.ndarray], train_x: np.ndarray, path: Path) -> torch.Tensor | None:
    """``x_train_scale``, the standard deviations of codes written with their means (finite,
    non-negative, one per value of ``x_train``), or None."""
    if "x_train_scale" not in arrays:
        return None
    where = f"{path}[x_train_scale]"
    if not np.issubdtype(arrays["x_train_scale"].dtype, np.floating):
        raise DataError(f"{where}: standard deviations must be floating-point numbers")
    scale = _as_examples(arrays["x_train_scale"], where)
    if scale.shape != train_x.shape:
        raise DataError(
            f"{where}: shape {scale.shape} is not x_train's {train_x.shape}: one standard "
            "deviation per value"
        )
    if (scale < 0).any():
        raise DataError(f"{where}: standard deviations must be non-negative")
    return torch.from_numpy(scale)


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L")


def _check_alpha(file: Path, image: Any) -> None:
    """Refuse transparency, which grey or RGB values cannot hold; an alpha channel that is
    opaque everywhere is dropped (nothing is lost)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("LA", "RGBA", "PA", "La", "RGBa"):
        return
    low, _ = image.getchannel("A").getextrema()
    if low < 255:
        raise DataError(
            f"{file}: has transparent pixels (an alpha channel), which grey or RGB values "
            "cannot hold; flatten the images first (e.g. onto a white background)"
        )


def _pixels(file: Path, image: Any, mode: str, size: int | None) -> np.ndarray:
    """The image's values in [0, 1] as float32 ``(H, W)`` or ``(H, W, 3)``: 8-bit images
    divided by 255, 16-bit ones by 65535 (their full range, not clipped to 8 bits)."""
    from PIL import Image

    if image.mode not in SIXTEEN_BIT_MODES:
        return np.asarray(_resized(image.convert(mode), size), dtype=np.float32) / 255
    values = np.asarray(image, dtype=np.float64)
    if values.max(initial=0) > 65535 or values.min(initial=0) < 0:
        raise DataError(f"{file}: 32-bit values; vaekit reads 8- and 16-bit images")
    grey = Image.fromarray((values / 65535).astype(np.float32), mode="F")
    array = np.asarray(_resized(grey, size), dtype=np.float32)
    return np.repeat(array[..., None], 3, axis=-1) if mode == "RGB" else array


def _resized(image: Any, size: int | None) -> Any:
    from PIL import Image

    if size is None or image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR)


def load_image_folder(path: str | Path, image_size: int | None = None) -> Dataset:
    """A dataset from a folder of PNG/JPEG images, resized to ``image_size`` x ``image_size``
    when given (else all images must have one size). Grey images stay one channel; if any
    image has colour, all are read as RGB."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root}: no .png/.jpg/.jpeg images found")
    if image_size is not None:
        fits_in_memory(
            f"{len(files)} images of {image_size}x{image_size}", 12 * len(files) * image_size**2
        )
    images = []
    try:
        for file in files:
            with Image.open(file) as image:
                image.load()
                images.append(image.copy())
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        OSError,
        SyntaxError,
        ValueError,
    ) as err:
        raise DataError(f"{file}: not a readable image ({err}); remove or replace it") from err
    for file, image in zip(files, images, strict=True):
        _check_alpha(file, image)
    mode = "L" if all(image.mode in GREY_MODES for image in images) else "RGB"
    sizes = {image.size for image in images}
    if image_size is None and len(sizes) > 1:
        first, other = images[0].size, next(s for s in sizes if s != images[0].size)
        raise DataError(
            f"{root}: images have different sizes ({first[0]}x{first[1]}, {other[0]}x{other[1]}, "
            "...); pass --image-size N to resize them all to N x N"
        )
    x = np.stack(
        [_pixels(f, image, mode, image_size) for f, image in zip(files, images, strict=True)]
    )
    x = np.ascontiguousarray(x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2))
    folders = sorted({file.parent for file in files})
    y = None
    if len(folders) > 1:
        index = {folder: i for i, folder in enumerate(folders)}
        y = np.array([index[file.parent] for file in files], dtype=np.int64)
    data = holdout_split(x, y, root.name)
    data.sources = [str(file.relative_to(root)) for file in files]
    if y is not None:
        data.classes = [str(folder.relative_to(root)) for folder in folders]
    return data
