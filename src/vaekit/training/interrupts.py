"""Stopping a run cleanly: the first Ctrl-C (SIGINT) asks the loop to stop at the next step
boundary, where the trainer checkpoints its position inside the epoch; a second one
interrupts at once (the last checkpoint stays)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class StopRequest:
    """Set by the signal handler, read by the loop once a step."""

    def __init__(self) -> None:
        self.requested = False


@contextlib.contextmanager
def stop_on_sigint(stop: StopRequest) -> Iterator[None]:
    """While training, SIGINT sets ``stop.requested``; a second SIGINT raises
    KeyboardInterrupt at once. (Only the main thread can own signal handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
