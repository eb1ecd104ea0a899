"""Registries of named components: models, posteriors, priors, likelihoods, networks,
objectives, learning-rate schedules.

A component registers under a name with a dataclass of its options. The registries then give
everything else its names: the configuration's validation (an unknown name, or an option the
chosen component does not take, is one clear error), the command line's choices and flags, and
``load``'s dispatch. Nothing outside a registry turns an unknown name into a default.

    PRIORS = Registry("prior")

    @dataclass
    class MixtureOptions:
        components: int = 10

    @PRIORS.register("mog", MixtureOptions)
    class MixturePrior(Prior): ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from vaekit.errors import ConfigError

T = TypeVar("T")


@dataclass
class NoOptions:
    """A component without options."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, what builds it, and its options' dataclass."""

    name: str
    builder: T
    options: type
    help: str

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.options))

    def make_options(self, given: dict[str, Any], flag_prefix: str = "--") -> Any:
        """The options dataclass from ``given`` (missing ones take their defaults); an option
        this component does not take is one error naming the component."""
        unknown = sorted(set(given) - set(self.option_names()))
        if unknown:
            flags = ", ".join(flag_prefix + name.replace("_", "-") for name in unknown)
            raise ConfigError(f"{self.name} takes no option {flags}")
        return self.options(**given)


class Registry(Generic[T]):
    """Named components of one kind (``kind``: "prior", "likelihood", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, options: type = NoOptions) -> Callable[[T], T]:
        """Decorator: register ``builder`` (a class or function) as ``name``, taking the
        ``options`` dataclass."""
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"the options of {self.kind} {name!r} must be a dataclass")

        def add(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (getattr(builder, "__doc__", None) or "").strip().split("\n\n")[0]
            self._entries[name] = Entry(name, builder, options, " ".join(doc.split()).rstrip("."))
            return builder

        return add

    def __getitem__(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}: use one of {', '.join(self.names())}"
            ) from None

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)


def import_submodules(package: str) -> None:
    """Import every module of ``package`` (a folder of components, each registering itself):
    adding a component is adding its module."""
    import importlib
    import pkgutil

    path = importlib.import_module(package).__path__
    for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")
