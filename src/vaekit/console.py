"""Lines for the user on standard output that never stop the work: when the reader goes
away (``vaekit train ... | head``), output is silenced and the work goes on."""

from __future__ import annotations

import contextlib
import os
import sys

from tqdm.auto import tqdm


def say(line: str) -> None:
    """Print ``line`` (through tqdm, so a progress bar stays intact); if stdout's reader has
    gone, send the rest of stdout to /dev/null instead of failing."""
    try:
        tqdm.write(line, file=sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()


def silence_stdout() -> None:
    """Point stdout at /dev/null (what is left in its buffer is dropped with it)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def step_bar(total: int, done: int, shown: bool) -> tqdm:
    """The training loops' progress bar of ``total`` steps, ``done`` of them already (a
    resumed run); not drawn unless ``shown`` (and stdout a terminal)."""
    return tqdm(
        total=total,
        initial=done,
        disable=not shown or None,
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
