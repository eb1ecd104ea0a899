"""Stopping a run cleanly. The first SIGINT (Ctrl-C), SIGTERM (what Slurm, Kubernetes and
``docker stop`` send) or SIGHUP (a closed terminal) asks the loop to stop at the next step
boundary, where the trainer checkpoints its position inside the epoch and raises
:class:`Stopped`; a second one stops at once (the last checkpoint stays). Installing handlers
also makes SIGTERM work for a process that is PID 1 of a container, which otherwise ignores
it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Stopped(KeyboardInterrupt):
    """The run stopped on ``signum`` (after checkpointing, unless stopped at once)."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message)
        self.signum = signum


class StopRequest:
    """Set by the signal handler, read by the loop once a step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """While training, SIGINT/SIGTERM/SIGHUP set ``stop.signum``; a second one raises
    :class:`Stopped` at once. (Only the main thread can own signal handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        if stop.requested:
            raise Stopped(signum)
        stop.signum = signum

    previous = {signum: signal.signal(signum, request_stop) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
