"""Multi-layer perceptron used for MLP encoders and decoders."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from vaekit.checks import fits_in_memory

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "glu": nn.GLU,
}
GATED = "glu"
"""A gated layer, h = (W x + b) ⊙ sigmoid(V x + c) (Dauphin et al. 2017; the GatedDense of
Tomczak & Welling's VampPrior models): its linear map computes both halves, twice the width."""


def activation_layer(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def mlp_weights(n_in: int, hidden: list[int], n_out: int, activation: str) -> int:
    """The weights of an :class:`MLP` (biases aside; a gated one counted as if its output
    layer were gated too: an upper bound)."""
    widen = 2 if activation == GATED else 1
    return widen * sum(a * b for a, b in itertools.pairwise([n_in, *hidden, n_out]))


class MLP(nn.Module):
    """``x -> Linear -> act -> ... -> Linear``, flattening ``(B, *in_shape)`` and reshaping
    the output to ``(B, *out_shape)``."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        hidden: list[int],
        out_shape: tuple[int, ...],
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        sizes = [_numel(self.in_shape), *hidden]
        layers: list[nn.Module] = []
        widen = 2 if activation == GATED else 1
        weights = mlp_weights(sizes[0], hidden, _numel(self.out_shape), activation)
        # float32 weights, their gradients and Adam's two moments; refused before allocating
        fits_in_memory(f"a network of {weights:,} weights", 16 * weights)
        for width_in, width_out in itertools.pairwise(sizes):
            layers += [nn.Linear(width_in, widen * width_out), activation_layer(activation)]
        layers.append(nn.Linear(sizes[-1], _numel(self.out_shape)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[: x.dim() - len(self.in_shape)]
        out = self.layers(x.reshape(*batch, -1))
        return out.reshape(*batch, *self.out_shape)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
