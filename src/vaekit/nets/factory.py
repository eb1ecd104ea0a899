"""Build the encoder/decoder pair named by a :class:`~vaekit.config.ModelConfig`."""

from __future__ import annotations

import torch
from torch import nn

from vaekit.config import ModelConfig
from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.mlp import MLP


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Return ``(encoder, decoder)``: encoder ``(B, *input_shape) -> (B, 2 * latent_dim)``,
    decoder ``(B, latent_dim) -> (B, *param_shape)`` (conv: the parameters stacked along the
    channels), initialised as ``config.init`` says."""
    shape, latent = config.input_shape, config.latent_dim
    if config.network == "conv":
        (hidden,) = config.hidden
        channels, height, width = shape
        out = (channels * (2 if config.decoded_scale else 1), height, width)
        networks: tuple[nn.Module, nn.Module] = (
            ConvEncoder(shape, hidden, 2 * latent, config.activation),  # type: ignore[arg-type]
            ConvDecoder(latent, hidden, out, config.activation),
        )
    else:
        networks = (
            MLP(shape, config.hidden, (2 * latent,), config.activation),
            MLP((latent,), list(reversed(config.hidden)), config.param_shape, config.activation),
        )
    if config.init == "glorot":
        for network in networks:
            network.apply(_glorot)
    return networks


def _glorot(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases (Glorot & Bengio 2010) for dense and conv layers."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


@torch.no_grad()
def set_output_bias(decoder: nn.Module, train_x: torch.Tensor) -> None:
    """Start an MLP decoder's Bernoulli logits at logit(mean training example), so that the
    untrained model already predicts each pixel's marginal frequency (Burda et al. 2015)."""
    if not isinstance(decoder, MLP):
        raise TypeError("the output bias can be set for vaekit's MLP decoder only")
    mean = train_x.mean(0).flatten().clamp(1e-3, 1 - 1e-3)
    decoder.layers[-1].bias.copy_(torch.logit(mean))
