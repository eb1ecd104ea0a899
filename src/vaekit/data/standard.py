"""Standard datasets: scikit-learn's 8x8 digits (embedded, no download), MNIST and
Fashion-MNIST (the four gzipped IDX files, downloaded once into a cache and SHA-256 checked,
or read from a directory the user names)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaekit.data.dataset import Dataset, holdout_split
from vaekit.data.idx import read_idx
from vaekit.errors import DataError

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class IDXSource:
    """Where an IDX dataset comes from: mirrors and the accepted SHA-256 of each ``.gz`` file
    (several per file where equally valid copies circulate, e.g. re-compressed ones)."""

    mirrors: tuple[str, ...]
    sha256: dict[str, frozenset[str]]


IDX_SOURCES = {
    "mnist": IDXSource(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sha256={
            "train-images-idx3-ubyte": frozenset(
                {
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
                }
            ),
            "train-labels-idx1-ubyte": frozenset(
                {
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
                }
            ),
            "t10k-images-idx3-ubyte": frozenset(
                {
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
                }
            ),
            "t10k-labels-idx1-ubyte": frozenset(
                {
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
                }
            ),
        },
    ),
    "fashion-mnist": IDXSource(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        sha256={
            "train-images-idx3-ubyte": frozenset(
                {"08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc"}
            ),
            "train-labels-idx1-ubyte": frozenset(
                {"b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc"}
            ),
            "t10k-images-idx3-ubyte": frozenset(
                {"78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229"}
            ),
            "t10k-labels-idx1-ubyte": frozenset(
                {"42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf"}
            ),
        },
    ),
}

STANDARD_DATASETS = ("digits", *IDX_SOURCES)


def cache_dir() -> Path:
    """``$VAEKIT_CACHE`` or ``~/.cache/vaekit``."""
    return Path(os.environ.get("VAEKIT_CACHE", Path.home() / ".cache" / "vaekit"))


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits, grey levels 0..16 scaled to [0, 1], as ``(N, 1, 8, 8)``;
    a fixed 10% test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return holdout_split(x, bunch.target.astype(np.int64), "digits")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(name: str, source: IDXSource, stem: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in source.mirrors:
        url = f"{mirror}{stem}.gz"
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{stem}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while block := response.read(1 << 20):
                    out.write(block)
            if sha256_of(Path(tmp)) not in source.sha256[stem]:
                errors.append(f"{url}: checksum mismatch")
                continue
            os.replace(tmp, target)
            return
        except OSError as err:
            errors.append(f"{url}: {err}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    with contextlib.suppress(OSError):
        target.parent.rmdir()  # only if empty: nothing is left of a failed first download
    raise DataError(
        f"could not download {name} file {stem}.gz ({'; '.join(errors)}); download the four "
        f"files yourself and pass --data-dir DIR"
    )


def _locate(name: str, stem: str, data_dir: Path | None, verify: bool) -> Path:
    source = IDX_SOURCES[name]
    if data_dir is not None:
        for candidate in (data_dir / f"{stem}.gz", data_dir / stem):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise DataError(f"{data_dir}: {stem}.gz not found; put the four {name} IDX files there")
    else:
        path = cache_dir() / name / f"{stem}.gz"
        if not path.is_file():
            _download(name, source, stem, path)
    digest = sha256_of(path) if verify and path.suffix == ".gz" else None
    if digest is not None and digest not in source.sha256[stem]:
        other = [n for n, s in IDX_SOURCES.items() if digest in s.sha256.get(stem, ())]
        if other:
            raise DataError(
                f"{path} is {other[0]}'s {stem}.gz, not {name}'s: use --dataset {other[0]}, or "
                f"point --data-dir at {name}'s files"
            )
        raise DataError(
            f"{path}: SHA-256 checksum does not match any known copy of {name}; replace the "
            "file with an intact copy (or pass --no-verify if you trust it)"
        )
    return path


def load_idx_dataset(name: str, data_dir: str | Path | None = None, verify: bool = True) -> Dataset:
    """MNIST or Fashion-MNIST as ``(N, 1, 28, 28)`` float32 in [0, 1] with labels."""
    root = None if data_dir is None else Path(data_dir)
    arrays = [read_idx(_locate(name, stem, root, verify)) for stem in FILES]
    train_x, train_y, test_x, test_y = arrays
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{name} {split} files do not fit together (images {images.shape}, labels "
                f"{labels.shape}); check that --data-dir holds the right four files"
            )

    def images_tensor(images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)

    return Dataset(
        name,
        images_tensor(train_x),
        images_tensor(test_x),
        torch.from_numpy(train_y.astype(np.int64)),
        torch.from_numpy(test_y.astype(np.int64)),
    )
