"""Configuration fields (:func:`option`: a default with its command-line help) and the
validation of their values: each check raises :class:`ConfigError` with one line."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import field
from typing import Any

from vaekit.errors import ConfigError


def positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be a {bound} integer, got {value!r}")


def positive_float(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be a {bound} finite number, got {value!r}")


def sizes(name: str, value: Any) -> list[int]:
    """``value`` as a list of positive integers (layer widths), or one line saying why not."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of sizes, got {value!r}")
    for size in value:
        positive_int(f"every {name} size", size)
    return list(value)


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")


def choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def is_number(value: Any) -> bool:
    """An int or a float as JSON gives them (a bool is neither): a saved file's number."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def memory_bytes() -> int:
    """This machine's physical memory in bytes (POSIX; 2**63 where it cannot be read)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63


def fits_in_memory(what: str, n_bytes: float) -> None:
    """Refuse, before allocating, what could not fit in this machine's memory."""
    available = memory_bytes()
    if n_bytes > available:
        raise ConfigError(
            f"{what} would need {n_bytes / 2**30:,.1f} GiB, more than this machine's "
            f"{available / 2**30:,.1f} GiB of memory; make it smaller"
        )


def seed(name: str, value: Any) -> None:
    """A seed torch accepts: an integer in [0, 2**63)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ConfigError(f"{name} must be an integer from 0 to 2**63 - 1, got {value!r}")


def option(default: Any, help: str, choices: Iterable[str] | None = None) -> Any:
    """A dataclass field with its command-line help (and its choices, if a fixed set); a
    callable ``default`` is a factory (for lists). The command line is generated from these."""
    metadata = {"help": help, "choices": None if choices is None else tuple(choices)}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)
