"""Reader of the IDX format of MNIST-style files (gzipped or not), checking every header field.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
that many big-endian uint32 sizes, then the values.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from vaekit.errors import DataError

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` is decompressed). Raises :class:`DataError`
    on a missing, truncated or malformed file."""
    path = Path(path)
    fix = "delete it and download it again"
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError as err:
        raise DataError(f"{path}: file not found") from err
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable gzip/IDX file ({err}); {fix}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: bad IDX magic number {raw[:4].hex() or 'empty'}; {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on absurd headers
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise DataError(
            f"{path}: IDX file is {state} ({len(raw) - header} of {expected} bytes); {fix}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
