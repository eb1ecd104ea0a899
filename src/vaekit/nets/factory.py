"""Build the encoder/decoder pair named by a :class:`~vaekit.config.ModelConfig`."""

from __future__ import annotations

from torch import nn

from vaekit.config import ModelConfig
from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.mlp import MLP


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Return ``(encoder, decoder)``: encoder ``(B, *input_shape) -> (B, 2 * latent_dim)``,
    decoder ``(B, latent_dim) -> (B, *input_shape)``."""
    shape, latent = config.input_shape, config.latent_dim
    if config.network == "conv":
        (hidden,) = config.hidden
        return (
            ConvEncoder(shape, hidden, 2 * latent, config.activation),  # type: ignore[arg-type]
            ConvDecoder(latent, hidden, shape, config.activation),  # type: ignore[arg-type]
        )
    return (
        MLP(shape, config.hidden, (2 * latent,), config.activation),
        MLP((latent,), list(reversed(config.hidden)), shape, config.activation),
    )
