"""The model's configuration: its shape and one named component, with options, per part.

    ModelConfig(input_shape=(1, 28, 28), latent_dim=20,
                network=Component("mlp", NetworkOptions(hidden=[400])),
                likelihood=Component("bernoulli"), ...)

is written to ``config.json`` (format 2) as ``{"network": {"name": "mlp", "hidden": [400],
...}, ...}``. :meth:`ModelConfig.from_options` builds one from flat options as the command
line and ``vaekit.VAE(...)`` give them (``hidden=[400], prior="mog", components=10``): each
option goes to the chosen component that takes it. Format-1 files (flat, every option present
whether used or not) still load.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vaekit.checks import positive_int
from vaekit.errors import ConfigError
from vaekit.model.contract import MODELS, POSTERIORS, PRIORS
from vaekit.model.likelihoods import LIKELIHOODS
from vaekit.nets.factory import NETWORKS
from vaekit.registry import NoOptions, Registry

# importing the component packages registers every posterior and prior
from vaekit.model import posteriors, priors  # noqa: F401  isort: skip

COMPONENTS: dict[str, Registry] = {
    "model": MODELS,
    "network": NETWORKS,
    "likelihood": LIKELIHOODS,
    "posterior": POSTERIORS,
    "prior": PRIORS,
}
DEFAULTS = {
    "model": "vae",
    "network": "mlp",
    "likelihood": "bernoulli",
    "posterior": "diagonal-gaussian",
    "prior": "standard-normal",
}


@dataclass
class Component:
    """A registered component's name and its options (that component's options dataclass)."""

    name: str
    options: Any = field(default_factory=NoOptions)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self.options)}


@dataclass
class ModelConfig:
    """The model: ``input_shape`` of one example (``(C, H, W)`` or ``(D,)``), ``latent_dim``
    (the size of z; in a hierarchy, of its bottom layer z_1, the one the decoder reads), the
    ``model`` kind with its options, and its network, likelihood, posterior and prior."""

    input_shape: tuple[int, ...]
    latent_dim: int = 20
    network: Component = field(default_factory=lambda: Component("mlp", _options("network")))
    likelihood: Component = field(default_factory=lambda: Component("bernoulli"))
    posterior: Component = field(default_factory=lambda: Component("diagonal-gaussian"))
    prior: Component = field(default_factory=lambda: Component("standard-normal"))
    model: Component = field(default_factory=lambda: Component("vae"))

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        if not self.input_shape:
            raise ConfigError("input_shape must have at least one dimension")
        for size in self.input_shape:
            positive_int("every input dimension", size)
        positive_int("latent_dim", self.latent_dim)
        for kind, registry in COMPONENTS.items():
            component = getattr(self, kind)
            entry = registry[component.name]
            if not isinstance(component.options, entry.options):
                raise ConfigError(f"{kind} {component.name}: options of the wrong kind")

    @classmethod
    def from_options(
        cls, input_shape: tuple[int, ...], latent_dim: int = 20, **options: Any
    ) -> ModelConfig:
        """From flat options: ``model``, ``network``, ``likelihood``, ``posterior``, ``prior``
        (names), and the chosen components' options (e.g. ``hidden``, ``gaussian_scale``,
        ``components``, ``upper_layers``); an option no chosen component takes is an error
        naming the one that does."""
        names = {kind: options.pop(kind, None) or DEFAULTS[kind] for kind in COMPONENTS}
        routed = _route(names, options)
        return cls(
            input_shape,
            latent_dim,
            **{
                kind: Component(names[kind], COMPONENTS[kind][names[kind]].make_options(given))
                for kind, given in routed.items()
            },
        )

    def describe(self) -> str:
        """The model in words, e.g. ``vae: mlp network, 20-dimensional z, diagonal-gaussian
        posterior, standard-normal prior, bernoulli likelihood`` (a model kind whose options
        have ``describe(latent_dim)`` says what its z is)."""
        describe_z = getattr(self.model.options, "describe", None)
        z = describe_z(self.latent_dim) if describe_z else f"{self.latent_dim}-dimensional z"
        return (
            f"{self.model.name}: {self.network.name} network, {z}, {self.posterior.name} "
            f"posterior, {self.prior.name} prior, {self.likelihood.name} likelihood"
        )

    def to_dict(self) -> dict[str, Any]:
        """Format 2: ``{"input_shape", "latent_dim", "model": {"name", ...}, "network": {...},
        ...}`` (the model kind is written as a bare name when it has no options, as before it
        had any)."""
        components = {kind: getattr(self, kind).to_dict() for kind in COMPONENTS}
        if set(components["model"]) == {"name"}:
            components["model"] = self.model.name
        return {"input_shape": list(self.input_shape), "latent_dim": self.latent_dim, **components}

    def flat_options(self) -> dict[str, Any]:
        """The component names and their options as flat keywords (``from_options``'s)."""
        flat: dict[str, Any] = {}
        for kind in COMPONENTS:
            component = getattr(self, kind)
            flat[kind] = component.name
            flat.update(dataclasses.asdict(component.options))
        return flat

    @classmethod
    def from_dict(cls, data: Any) -> ModelConfig:
        """Format 2 (components as objects), or format 1 (flat: options of components that
        were not chosen are dropped, as they had no effect)."""
        if not isinstance(data, dict):
            raise ConfigError("the model configuration must be an object")
        data = dict(data)
        if isinstance(data.get("network", "mlp"), str):  # format 1
            return cls.from_options(**_format_1(data))
        unknown = sorted(set(data) - {"input_shape", "latent_dim", *COMPONENTS})
        if unknown:
            raise ConfigError(f"the model configuration has unknown keys {unknown}")
        if isinstance(data.get("model"), str):  # a model kind without options
            data["model"] = {"name": data["model"]}
        components = {}
        for kind in COMPONENTS:
            given = data.pop(kind, {"name": DEFAULTS[kind]})
            if not isinstance(given, dict) or not isinstance(given.get("name"), str):
                raise ConfigError(f"the model's {kind} must be an object with a name")
            options = dict(given)
            name = options.pop("name")
            entry = COMPONENTS[kind][name]
            components[kind] = Component(name, entry.make_options(options, flag_prefix=""))
        return cls(**data, **components)


def _route(names: dict[str, str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each option to every chosen component that takes it (one word, one meaning)."""
    routed: dict[str, dict[str, Any]] = {kind: {} for kind in COMPONENTS}
    for key, value in options.items():
        owners = [
            kind for kind in COMPONENTS if key in COMPONENTS[kind][names[kind]].option_names()
        ]
        if not owners:
            flag = "--" + key.replace("_", "-")
            takers = [
                f"--{kind} {entry.name}"
                for kind, registry in COMPONENTS.items()
                for entry in registry
                if key in entry.option_names()
            ]
            if takers:
                raise ConfigError(f"{flag} goes with {' or '.join(takers)}")
            raise ConfigError(f"unknown model option {key!r}")
        for kind in owners:
            routed[kind][key] = value
    return routed


def _format_1(data: dict[str, Any]) -> dict[str, Any]:
    """A format-1 (flat) model section as ``from_options`` keywords, without the options
    of components that were not chosen."""
    names = {kind: data.get(kind, DEFAULTS[kind]) for kind in COMPONENTS}
    for kind, name in names.items():
        if not isinstance(name, str):
            raise ConfigError(f"the model's {kind} must be a name, got {name!r}")
    taken = {key for kind in COMPONENTS for key in COMPONENTS[kind][names[kind]].option_names()}
    known = taken | {"input_shape", "latent_dim", *COMPONENTS}
    every = {key for registry in COMPONENTS.values() for e in registry for key in e.option_names()}
    unknown = sorted(set(data) - known - every)
    if unknown:
        raise ConfigError(f"the model configuration has unknown keys {unknown}")
    return {key: value for key, value in data.items() if key in known}


def _options(kind: str, name: str | None = None) -> Any:
    return COMPONENTS[kind][name or DEFAULTS[kind]].options()
