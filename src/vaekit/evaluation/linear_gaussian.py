"""The linear-Gaussian VAE, whose every term is known in closed form.

    p(z) = N(0, I),   p(x|z) = N(Wz + b, σ² I),   q(z|x) = N(μ(x), diag s(x)²)  (linear encoder)

    log p(x)      = log N(x; b, WWᵀ + σ² I)
    p(z|x)        = N(m, Σ),  Σ = (I + WᵀW / σ²)⁻¹,  m = Σ Wᵀ (x − b) / σ²
    ELBO(x)       = −D/2 log(2πσ²) − (‖x − Wμ − b‖² + Σ_j s_j² ‖W_:j‖²) / (2σ²)
                    − ½ Σ_j (s_j² + μ_j² − 1 − log s_j²)
    KL(q || p(z|x)) between two Gaussians (torch.distributions)

so log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)) can be checked to float64 precision, and every
Monte Carlo estimator of vaekit can be tested against the truth. All closed forms are computed
in float64 from the model's parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.model.likelihoods import GaussianLikelihood
from vaekit.model.posteriors.diagonal_gaussian import MIN_SCALE
from vaekit.model.vae import VAE
from vaekit.objectives.elbo import ELBOTerms


def linear_gaussian_vae(data_dim: int, latent_dim: int, sigma: float = 1.0) -> VAE:
    """A VAE with linear encoder ``x -> [μ, s_raw]`` and linear decoder ``z -> Wz + b``,
    Gaussian likelihood of fixed standard deviation ``sigma``."""
    return VAE(
        (data_dim,),
        latent_dim,
        likelihood="gaussian",
        gaussian_scale=sigma,
        encoder=nn.Linear(data_dim, 2 * latent_dim),
        decoder=nn.Linear(latent_dim, data_dim),
    )


def linear_decoder(model: VAE) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(W, b, σ)`` of a linear decoder with a Gaussian likelihood of one shared σ."""
    if not isinstance(model.decoder, nn.Linear) or not isinstance(
        model.likelihood, GaussianLikelihood
    ):
        raise TypeError("closed forms need a linear decoder and a Gaussian likelihood")
    log_scale = model.likelihood.log_scale.detach().double()
    if not torch.allclose(log_scale, log_scale.flatten()[0]):
        raise TypeError("closed forms need one shared likelihood scale σ")
    weight = model.decoder.weight.double()
    return weight, model.decoder.bias.double(), float(log_scale.flatten()[0].exp())


def marginal(model: VAE) -> MultivariateNormal:
    """p(x) = N(b, WWᵀ + σ² I)."""
    weight, bias, sigma = linear_decoder(model)
    covariance = weight @ weight.T + sigma**2 * torch.eye(len(bias), dtype=torch.float64)
    return MultivariateNormal(bias, covariance)


def log_px(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x), ``(B,)``, float64."""
    return marginal(model).log_prob(x.double())


def posterior(model: VAE, x: torch.Tensor) -> MultivariateNormal:
    """The true posterior p(z|x) = N(m, Σ), batch shape ``(B,)``."""
    weight, bias, sigma = linear_decoder(model)
    eye = torch.eye(weight.shape[1], dtype=torch.float64)
    covariance = torch.linalg.inv(eye + weight.T @ weight / sigma**2)
    mean = (x.double() - bias) @ weight @ covariance.T / sigma**2
    return MultivariateNormal(mean, covariance)


def encoder_distribution(model: VAE, x: torch.Tensor) -> MultivariateNormal:
    """q(z|x) as a float64 full-covariance Gaussian (diagonal), for closed-form KLs."""
    q = model.encode(x.to(next(model.parameters()).dtype))
    loc, scale = q.base_dist.loc.double(), q.base_dist.scale.double()
    return MultivariateNormal(loc, scale_tril=torch.diag_embed(scale))


def exact_elbo(model: VAE, x: torch.Tensor) -> ELBOTerms:
    """ELBO(x), E_q[log p(x|z)] and KL(q(z|x) || p(z)) in closed form, ``(B,)`` each, float64."""
    weight, bias, sigma = linear_decoder(model)
    q = encoder_distribution(model, x)
    mu, variance = q.loc, q.covariance_matrix.diagonal(dim1=-2, dim2=-1)
    residual = x.double() - mu @ weight.T - bias
    spread = variance @ (weight**2).sum(0)
    data_dim = weight.shape[0]
    reconstruction = -0.5 * data_dim * math.log(2 * math.pi * sigma**2) - (
        (residual**2).sum(-1) + spread
    ) / (2 * sigma**2)
    prior = MultivariateNormal(torch.zeros_like(mu), torch.eye(mu.shape[-1], dtype=torch.float64))
    rate = kl_divergence(q, prior)
    return ELBOTerms(reconstruction - rate, reconstruction, rate)


def posterior_kl(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z|x)) in closed form, ``(B,)``, float64: the ELBO's gap."""
    return kl_divergence(encoder_distribution(model, x), posterior(model, x))


@torch.no_grad()
def set_optimal_encoder(model: VAE) -> None:
    """Set the linear encoder to the diagonal Gaussian closest to the true posterior:
    mean m(x) = Σ Wᵀ (x − b) / σ² (exact) and scales s_j = (Σ⁻¹)_jj^(-1/2), the minimiser of
    KL(q || p(z|x)) over diagonal q. When WᵀW is diagonal, q = p(z|x) and the gap is zero."""
    weight, bias, sigma = linear_decoder(model)
    precision = torch.eye(weight.shape[1], dtype=torch.float64) + weight.T @ weight / sigma**2
    gain = torch.linalg.solve(precision, weight.T) / sigma**2  # Σ Wᵀ / σ²
    scale = precision.diagonal().rsqrt() - MIN_SCALE
    raw_scale = scale + torch.log(-torch.expm1(-scale))  # softplus⁻¹
    latent = weight.shape[1]
    encoder = model.encoder
    encoder.weight.zero_()
    encoder.weight[:latent] = gain.to(encoder.weight.dtype)
    encoder.bias[:latent] = (-gain @ bias).to(encoder.bias.dtype)
    encoder.bias[latent:] = raw_scale.to(encoder.bias.dtype)


def ppca_sigma(x: torch.Tensor, latent_dim: int) -> float:
    """Maximum-likelihood σ of probabilistic PCA (Tipping & Bishop 1999) for data ``(N, D)``:
    σ² = the mean of the D − L smallest eigenvalues of the data covariance."""
    flat = x.reshape(len(x), -1).double()
    eigenvalues = torch.linalg.eigvalsh(torch.cov(flat.T))
    discarded = eigenvalues[: flat.shape[1] - latent_dim]
    return float(discarded.clamp_min(1e-12).mean().sqrt())
