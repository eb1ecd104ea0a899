"""The probabilistic model: the contract of its parts (:mod:`~vaekit.model.contract`),
posteriors q(z|x), priors p(z), likelihoods p(x|z), the rate rules, and the VAE that ties them
together; each part is registered by name (``POSTERIORS``, ``PRIORS``, ``LIKELIHOODS``,
``MODELS``)."""

from vaekit.model.config import COMPONENTS, Component, ModelConfig
from vaekit.model.contract import MODELS, POSTERIORS, PRIORS, Posterior, Prior, build_model
from vaekit.model.likelihoods import LIKELIHOODS, BernoulliLikelihood, GaussianLikelihood
from vaekit.model.posteriors.diagonal_gaussian import DiagonalGaussianPosterior
from vaekit.model.priors.standard_normal import StandardNormalPrior
from vaekit.model.rate import RateRule, register_rate
from vaekit.model.vae import VAE

from vaekit.model.hierarchy import HierarchicalVAE  # isort: skip  (after the VAE it extends)
from vaekit.model.conditional import ConditionalVAE  # isort: skip
from vaekit.model.semi_supervised import SemiSupervisedVAE  # isort: skip

__all__ = [
    "COMPONENTS",
    "LIKELIHOODS",
    "MODELS",
    "POSTERIORS",
    "PRIORS",
    "VAE",
    "BernoulliLikelihood",
    "Component",
    "ConditionalVAE",
    "DiagonalGaussianPosterior",
    "GaussianLikelihood",
    "HierarchicalVAE",
    "ModelConfig",
    "Posterior",
    "Prior",
    "RateRule",
    "SemiSupervisedVAE",
    "StandardNormalPrior",
    "build_model",
    "register_rate",
]
