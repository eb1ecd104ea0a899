"""Data loading: standard datasets, the user's arrays and images, and every bad-input case."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from vaekit.data import binarize, fixed_binarization, read_idx
from vaekit.data.standard import FILES
from vaekit.errors import DataError


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_digits_is_embedded_with_a_fixed_split(digits: vaekit.Dataset) -> None:
    assert digits.shape == (1, 8, 8)
    assert len(digits.train_x) + len(digits.test_x) == 1797
    assert digits.in_unit_interval and not digits.is_binary
    again = vaekit.load_dataset("digits")
    assert torch.equal(again.test_x, digits.test_x)
    assert digits.train_y is not None and digits.train_y.max() == 9


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    array = np.random.default_rng(0).integers(0, 256, (5, 3, 4)).astype(np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.idx", array, compress)), array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "magic"),
        (b"\x00\x01\x08\x03" + b"\x00" * 12, "magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"\x01" * 5, "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"\x01" * 5, "longer"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
    ],
)
def test_idx_bad_files_give_clear_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_truncated_gzip_is_refused(tmp_path: Path) -> None:
    full = write_idx(tmp_path / "a.gz", np.zeros((50, 28, 28), np.uint8)).read_bytes()
    (tmp_path / "a.gz").write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"a\.gz"):
        read_idx(tmp_path / "a.gz")


def test_mnist_from_data_dir_is_verified_and_shaped(mnist_dir: Path) -> None:
    data = vaekit.load_dataset("mnist", data_dir=mnist_dir)
    assert data.train_x.shape == (60_000, 1, 28, 28) and data.test_x.shape == (10_000, 1, 28, 28)
    assert data.train_x.dtype == torch.float32 and float(data.train_x.max()) == 1.0
    assert data.test_y is not None and data.test_y.shape == (10_000,)


def test_wrong_checksum_and_missing_files_are_refused(tmp_path: Path, mnist_dir: Path) -> None:
    for stem in FILES:
        shutil.copy(mnist_dir / f"{stem}.gz", tmp_path / f"{stem}.gz")
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes()), mtime=1))
    with pytest.raises(DataError, match="SHA-256"):
        vaekit.load_dataset("mnist", data_dir=tmp_path)
    assert vaekit.load_dataset("mnist", data_dir=tmp_path, verify=False).test_x.shape[0] == 10_000
    labels.unlink()
    with pytest.raises(DataError, match="not found"):
        vaekit.load_dataset("mnist", data_dir=tmp_path)


def test_numpy_arrays_of_every_supported_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "vectors.npy": (rng.random((40, 6)).astype(np.float32), (6,)),
        "grey.npy": (rng.integers(0, 256, (40, 5, 7)).astype(np.uint8), (1, 5, 7)),
        "hwc.npy": (rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8), (3, 8, 8)),
        "chw.npy": (rng.random((40, 1, 4, 4)), (1, 4, 4)),
    }
    for name, (array, shape) in cases.items():
        np.save(tmp_path / name, array)
        data = vaekit.load_dataset(str(tmp_path / name))
        assert data.shape == shape, name
        assert len(data.train_x) == 36 and len(data.test_x) == 4
        assert data.train_x.dtype == torch.float32
    assert vaekit.load_dataset(str(tmp_path / "grey.npy")).in_unit_interval


def test_npz_with_splits_and_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.random((30, 4)),
        x_test=rng.random((10, 4)),
        y_train=np.arange(30),
        y_test=np.arange(10),
    )
    data = vaekit.load_dataset(str(tmp_path / "d.npz"))
    assert (
        len(data.train_x) == 30
        and data.test_y is not None
        and data.test_y.tolist() == list(range(10))
    )
    np.savez(tmp_path / "xy.npz", x=rng.random((20, 4)), y=np.arange(20) % 3)
    assert vaekit.load_dataset(str(tmp_path / "xy.npz")).train_y is not None
    np.savez(tmp_path / "ambiguous.npz", a=rng.random((20, 4)), b=rng.random((20, 4)))
    with pytest.raises(DataError, match="name it 'x'"):
        vaekit.load_dataset(str(tmp_path / "ambiguous.npz"))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.arange(10, dtype=np.float32), "rank 1"),
        (np.zeros((4, 2, 2, 2, 2), np.float32), "rank 5"),
        (np.zeros((4, 3), np.int64), "dtype"),
        (np.zeros((4, 3), np.complex64), "dtype"),
        (np.full((4, 3), np.nan, np.float32), "NaN"),
        (np.zeros((4, 5, 5, 5), np.float32), "channel"),
    ],
)
def test_bad_arrays_are_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message):
        vaekit.load_dataset(str(tmp_path / "bad.npy"))


class _Marker:
    """Unpickling this creates a file: proof that code from a data file ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickled_array_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    np.save(
        tmp_path / "evil.npy", np.array([_Marker(str(marker))], dtype=object), allow_pickle=True
    )
    (tmp_path / "evil.pkl.npy").write_bytes(pickle.dumps(_Marker(str(marker))))
    for name in ("evil.npy", "evil.pkl.npy"):
        with pytest.raises(DataError):
            vaekit.load_dataset(str(tmp_path / name))
    assert not marker.exists()


def _png(path: Path, size: tuple[int, int], mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8), mode).save(path)


def test_image_folder_with_class_subfolders(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        for i in range(5):
            _png(tmp_path / label / f"{i}.png", (6, 4))
    data = vaekit.load_dataset(str(tmp_path))
    assert data.shape == (1, 4, 6)
    assert data.train_y is not None and set(data.train_y.tolist()) | set(data.test_y.tolist()) == {
        0,
        1,
    }


def test_image_folder_mixed_sizes_need_resizing(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (8, 8))
    _png(tmp_path / "b.png", (9, 8), "RGB")
    with pytest.raises(DataError, match="--image-size"):
        vaekit.load_dataset(str(tmp_path))
    data = vaekit.load_dataset(str(tmp_path), image_size=4)
    assert data.shape == (3, 4, 4)


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no \.png"):
        vaekit.load_dataset(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png"):
        vaekit.load_dataset(str(tmp_path))
    with pytest.raises(DataError, match="unknown dataset"):
        vaekit.load_dataset("no-such-dataset")


def test_binarisation_fixed_for_test_fresh_for_training(digits: vaekit.Dataset) -> None:
    first, second = fixed_binarization(digits.test_x), fixed_binarization(digits.test_x)
    assert torch.equal(first, second) and set(first.unique().tolist()) <= {0.0, 1.0}
    generator = torch.Generator().manual_seed(0)
    assert not torch.equal(binarize(digits.train_x, generator), binarize(digits.train_x, generator))
    # E[binarised] = intensity: the mean over all values agrees to 5 standard errors
    draws = binarize(digits.train_x.expand(20, *digits.train_x.shape), generator)
    p = digits.train_x
    stderr = float((p * (1 - p)).sum().sqrt()) / p.numel()
    assert abs(float(draws.mean() - p.mean())) < 5 * stderr / 20**0.5


def test_binarize_is_bernoulli_at_every_intensity() -> None:
    """P(1) = p for each intensity p (5 standard errors of 200,000 draws); p = 0 and p = 1 are
    never flipped; values are 0.0/1.0 in the input's dtype."""
    p = torch.tensor([0.0, 1 / 255, 0.1, 0.5, 254 / 255, 1.0])
    n = 200_000
    draws = binarize(p.expand(n, -1), torch.Generator().manual_seed(3))
    assert draws.dtype == p.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    frequency = draws.mean(0)
    stderr = (p * (1 - p) / n).sqrt()
    assert torch.all((frequency - p).abs() <= 5 * stderr)
