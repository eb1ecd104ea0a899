"""Convolutional encoder/decoder pair for images whose sides are divisible by 4
(28x28 MNIST, 32x32 CIFAR-style): two stride-2 convolutions down, two transposed ones up."""

from __future__ import annotations

import torch
from torch import nn

from vaekit.nets.mlp import activation_layer

_CHANNELS = (32, 64)


class ConvEncoder(nn.Module):
    """``(B, C, H, W) -> (B, out_features)`` via conv(4, s2) x2, a dense layer, a linear head."""

    def __init__(
        self, in_shape: tuple[int, int, int], hidden: int, out_features: int, activation: str
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        c1, c2 = _CHANNELS
        self.layers = nn.Sequential(
            nn.Conv2d(channels, c1, 4, stride=2, padding=1),
            activation_layer(activation),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            activation_layer(activation),
            nn.Flatten(),
            nn.Linear(c2 * (height // 4) * (width // 4), hidden),
            activation_layer(activation),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ConvDecoder(nn.Module):
    """``(B, latent) -> (B, C, H, W)``, mirroring :class:`ConvEncoder`."""

    def __init__(
        self, latent_dim: int, hidden: int, out_shape: tuple[int, int, int], activation: str
    ) -> None:
        super().__init__()
        channels, height, width = out_shape
        c1, c2 = _CHANNELS
        self.layers = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            activation_layer(activation),
            nn.Linear(hidden, c2 * (height // 4) * (width // 4)),
            activation_layer(activation),
            nn.Unflatten(1, (c2, height // 4, width // 4)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            activation_layer(activation),
            nn.ConvTranspose2d(c1, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)
