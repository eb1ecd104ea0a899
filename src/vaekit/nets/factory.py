"""The registered encoder/decoder pairs (``NETWORKS``) and their options."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vaekit.checks import choice, fits_in_memory, option, sizes
from vaekit.errors import ConfigError
from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.mlp import ACTIVATIONS, GATED, MLP, mlp_weights
from vaekit.registry import Registry

INITS = ("default", "glorot")

NETWORKS: Registry = Registry("network")
"""Builders ``(options, shapes: NetworkShapes) -> (encoder, decoder)``."""


@dataclass(frozen=True)
class NetworkShapes:
    """What a model asks of its networks: the encoder maps ``(B, *input_shape)`` to ``(B,
    encoder_width)`` (the posterior's features), the decoder ``(B, latent_dim)`` to ``(B,
    *param_shape)`` (the likelihood's parameters)."""

    input_shape: tuple[int, ...]
    encoder_width: int
    latent_dim: int
    param_shape: tuple[int, ...]


@dataclass
class NetworkOptions:
    """hidden: widths of the hidden layers (encoder; the decoder mirrors them), or the width of
    the conv nets' dense layer; activation: the nonlinearity; init: ``default`` (PyTorch's) or
    ``glorot`` (Glorot-uniform weights, zero biases)."""

    hidden: list[int] = option(
        lambda: [400], "hidden layer sizes, e.g. 400 or 200,200 (conv: the dense layer's width)"
    )
    activation: str = option("relu", "the nonlinearity", tuple(ACTIVATIONS))
    init: str = option("default", "weight initialisation: PyTorch's, or Glorot-uniform", INITS)

    def __post_init__(self) -> None:
        self.hidden = sizes("hidden", self.hidden)
        choice("activation", self.activation, ACTIVATIONS)
        choice("init", self.init, INITS)


@NETWORKS.register("mlp", NetworkOptions)
def mlp_networks(options: NetworkOptions, shapes: NetworkShapes) -> tuple[nn.Module, nn.Module]:
    """Multi-layer perceptrons (any data shape)."""
    hidden, activation = options.hidden, options.activation
    n_in, n_out = math.prod(shapes.input_shape), math.prod(shapes.param_shape)
    _fits(
        mlp_weights(n_in, hidden, shapes.encoder_width, activation)
        + mlp_weights(shapes.latent_dim, list(reversed(hidden)), n_out, activation)
    )
    return _initialised(
        options,
        MLP(shapes.input_shape, hidden, (shapes.encoder_width,), activation),
        MLP((shapes.latent_dim,), list(reversed(hidden)), shapes.param_shape, activation),
    )


@NETWORKS.register("conv", NetworkOptions)
def conv_networks(options: NetworkOptions, shapes: NetworkShapes) -> tuple[nn.Module, nn.Module]:
    """Two stride-2 convolutions and a dense layer (images with sides divisible by 4).

    The likelihood's parameters are stacked along the decoder's output channels."""
    input_shape = shapes.input_shape
    if len(input_shape) != 3:
        raise ConfigError(
            f"the conv network needs image data (C, H, W), got shape {tuple(input_shape)}; "
            "use --network mlp"
        )
    _, height, width = input_shape
    if height % 4 or width % 4:
        raise ConfigError(
            f"the conv network needs height and width divisible by 4 (e.g. 28 or 32), "
            f"got {height}x{width}; use --image-size or --network mlp"
        )
    if len(options.hidden) != 1:
        raise ConfigError("the conv network takes one --hidden width (its dense layer)")
    if options.activation == GATED:
        raise ConfigError("--activation glu gates dense layers: use it with --network mlp")
    (hidden,) = options.hidden
    _fits(2 * hidden * (shapes.latent_dim + shapes.encoder_width + 64 * height * width // 16))
    out = (math.prod(shapes.param_shape) // (height * width), height, width)
    return _initialised(
        options,
        ConvEncoder(input_shape, hidden, shapes.encoder_width, options.activation),  # type: ignore[arg-type]
        ConvDecoder(shapes.latent_dim, hidden, out, options.activation),
    )


def _fits(weights: int) -> None:
    """Refuse networks whose training state (weights, gradients, Adam's two moments, float32)
    could not fit in memory, before allocating them."""
    fits_in_memory(f"networks of {weights:,} weights", 16 * weights)


def _initialised(
    options: NetworkOptions, encoder: nn.Module, decoder: nn.Module
) -> tuple[nn.Module, nn.Module]:
    if options.init == "glorot":
        for network in (encoder, decoder):
            network.apply(_glorot)
    return encoder, decoder


def _glorot(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases (Glorot & Bengio 2010) for dense and conv layers."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


@torch.no_grad()
def set_output_bias(decoder: nn.Module, bias: torch.Tensor) -> None:
    """Set the output bias of vaekit's MLP decoder (e.g. to the likelihood's
    ``initial_output_bias``)."""
    if not isinstance(decoder, MLP):
        raise ConfigError("--output-bias needs an MLP decoder (--network mlp)")
    decoder.layers[-1].bias.copy_(bias)
