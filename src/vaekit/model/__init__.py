"""The probabilistic model: prior p(z), likelihood p(x|z), approximate posterior q(z|x),
the VAE that ties them together, and the linear-Gaussian model whose terms are exact."""

from vaekit.model.likelihoods import BernoulliLikelihood, GaussianLikelihood, build_likelihood
from vaekit.model.posterior import diagonal_gaussian
from vaekit.model.priors import StandardNormalPrior
from vaekit.model.vae import VAE

__all__ = [
    "VAE",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "StandardNormalPrior",
    "build_likelihood",
    "diagonal_gaussian",
]
