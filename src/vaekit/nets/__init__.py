"""Neural networks that parameterise the encoder q(z|x) and the decoder p(x|z).

An encoder maps a batch ``(B, *input_shape)`` to ``(B, 2 * latent_dim)`` (the posterior's
mean and unconstrained scale); a decoder maps ``(B, latent_dim)`` to ``(B, *input_shape)``
(the likelihood's parameters, e.g. Bernoulli logits). Any ``nn.Module`` with these shapes
can be passed to :class:`vaekit.VAE`.
"""

from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.factory import build_networks, set_output_bias
from vaekit.nets.mlp import MLP

__all__ = ["MLP", "ConvDecoder", "ConvEncoder", "build_networks", "set_output_bias"]
