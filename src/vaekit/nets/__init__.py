"""Neural networks that parameterise the encoder q(z|x) and the decoder p(x|z).

An encoder maps a batch ``(B, *input_shape)`` to ``(B, width)``, the features the posterior
asks for (``2 * latent_dim`` for the diagonal Gaussian: mean and unconstrained scale); a
decoder maps ``(B, latent_dim)`` to ``(B, *param_shape)`` (the likelihood's parameters, e.g.
Bernoulli logits). Any ``nn.Module`` with these shapes can be passed to :class:`vaekit.VAE`.
"""

from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.factory import NETWORKS, NetworkShapes, set_output_bias
from vaekit.nets.mlp import MLP

__all__ = ["MLP", "NETWORKS", "ConvDecoder", "ConvEncoder", "NetworkShapes", "set_output_bias"]
