"""Crash-safe files: atomic writes and a run-directory lock (POSIX: Linux, macOS).

A file is written to a temporary name in the same directory, flushed and fsync'ed, then
renamed over the target (``os.replace`` is atomic on POSIX and Windows): a reader sees the old
file or the new one, never half of one, whatever kills the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaekit.errors import CheckpointError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file beside it, renamed).

    Any ``OSError`` names ``path``, the file the user asked for, never the temporary one.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # a read-only folder: name the file asked for, not the temporary one
        err.filename = str(path)
        raise
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename in (None, tmp):
            err.filename = str(path)  # a full disk's error names no file: name the one not written
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem can fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the operating system's lock on ``run_dir/.lock`` while training writes into the run.

    A second process is refused. The lock is ``flock``'s: it ends with the process that holds
    it, however that process ends (kill -9, a container stopped), so a lock left behind never
    blocks, whatever process later gets the same pid; taking it is atomic, so of two processes
    that try at once exactly one wins. The file names its holder (pid, host) for the message.
    """
    lock = run_dir / ".lock"
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise CheckpointError(
                f"{run_dir} is in use by another vaekit process ({holder}); wait for it to "
                "finish or use another run directory (the lock ends with that process: "
                "there is nothing to delete)"
            ) from None
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder before us removed the file as we opened it: take the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # while holding the lock: a waiting process sees another file
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it (it may have just taken the lock and not
    written yet: wait a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text.startswith("pid "):
            return text
        time.sleep(0.01)
    return "it has not written its pid yet"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
