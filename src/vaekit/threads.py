"""How many CPU threads vaekit's work uses.

On a machine where another job keeps a core busy, two threads that each wait for the other's
share of the work run several times slower than one thread (the default digits run: 16.5 s
with 2 threads, 7.7 s with 1, 4.6 s on a quiet machine; `benchmarks/options.py`, "one core
busy"). So the default is the cores that are free when the command starts: the cores this
process may use, less those busy over a 0.2 s look at ``/proc/stat`` (Linux; elsewhere the
one-minute load average, which also counts what has just finished), at least one. ``--threads N``
or ``VAEKIT_THREADS=N`` choose; ``OMP_NUM_THREADS`` (torchrun sets it) is left to torch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from vaekit.errors import ConfigError

ENVIRONMENT = "VAEKIT_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    why: str


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None) -> ThreadChoice:
    """The threads to use and why: ``requested`` (``--threads``), ``$VAEKIT_THREADS``,
    ``$OMP_NUM_THREADS`` (as torch read it), or the cores free now."""
    if requested is None and os.environ.get(ENVIRONMENT):
        text = os.environ[ENVIRONMENT]
        if not text.isdigit() or int(text) < 1:
            raise ConfigError(f"{ENVIRONMENT} must be a positive integer, got {text!r}")
        return ThreadChoice(int(text), f"${ENVIRONMENT}")
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"--threads must be positive, got {requested}")
        return ThreadChoice(requested, "--threads")
    if os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(torch.get_num_threads(), "$OMP_NUM_THREADS")
    cores = available_cores()
    busy = min(cores - 1, busy_cores())
    why = f"{cores} cores, {busy} busy" if busy else f"{cores} cores, none busy"
    return ThreadChoice(cores - busy, why)


def busy_cores(interval_s: float = 0.2) -> int:
    """How many of this process's cores other work keeps busy now: the busy share of each
    core over ``interval_s`` from ``/proc/stat``, summed and rounded."""
    try:
        cpus = os.sched_getaffinity(0)
        before = _cpu_times(cpus)
        time.sleep(interval_s)
        after = _cpu_times(cpus)
    except (OSError, AttributeError, ValueError):
        try:
            return round(os.getloadavg()[0])
        except OSError:
            return 0
    busy = 0.0
    for cpu, (idle, total) in after.items():
        idle_before, total_before = before[cpu]
        if total > total_before:
            busy += 1 - (idle - idle_before) / (total - total_before)
    return round(busy)


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """``{cpu: (idle, total)}`` jiffies of the given CPUs from ``/proc/stat``."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]
            times[int(name[3:])] = (values[3] + values[4], sum(values))
    return times
