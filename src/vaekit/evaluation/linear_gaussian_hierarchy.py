"""The linear-Gaussian hierarchy, whose every term is known in closed form.

    p(z_L) = N(0, I),   p(z_l|z_{l+1}) = N(W_l z_{l+1} + b_l, diag s_l²),
    p(x|z_1) = N(W z_1 + b, σ² I)     (or p(x|z) = N(W z + b, σ² I), the decoder reading all)

with linear networks and constant scales between the layers (the scale rows of their weights
zero). Then p(z) is a joint Gaussian N(m_p, Σ_p) over z = (z_1, ..., z_L); so, for each x, is
q(z|x), bottom-up, top-down or x-and-above: every layer is a linear function of the layers
drawn before it plus Gaussian noise, z = A z + c + diag(t) ε, so z = (I − A)⁻¹ (c + diag(t) ε).
With P = [W 0] (or W, the decoder reading all of z) the map from z to the decoder's mean:

    log p(x)   = log N(x; P m_p + b, P Σ_p Pᵀ + σ² I)
    p(z|x)     = N(m, Λ⁻¹),  Λ = Σ_p⁻¹ + PᵀP / σ²,  m = Λ⁻¹ (Σ_p⁻¹ m_p + Pᵀ (x − b) / σ²)
    ELBO(x)    = E_q[log N(x; Pz + b, σ² I)] + E_q[log N(z; m_p, Σ_p)] + H[q]

with E_{N(μ, S)}[log N(Kz + k; 0, C)] = log N(Kμ + k; 0, C) − ½ tr(C⁻¹ K S Kᵀ). All in float64,
read from the model's weights; the hierarchy's own sampling and density code is not used,
only its deterministic bottom-up estimates (q(z_1|x)'s parameters, or every layer's).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.evaluation.layers import layer_starts
from vaekit.evaluation.linear_gaussian import linear_decoder
from vaekit.model import ModelConfig
from vaekit.model.hierarchy import HierarchicalVAE, LayerNetwork, encoder_features
from vaekit.model.posteriors.diagonal_gaussian import MIN_SCALE
from vaekit.objectives.elbo import ELBOTerms

Chain = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""``(A, c, t)``: z = A z + c + diag(t) ε, each with leading batch dimensions as needed."""


def linear_gaussian_hierarchy(
    data_dim: int,
    sizes: list[int],
    inference: str = "top-down",
    sigma: float = 1.0,
    decoder_reads: str = "bottom",
    **options: Any,
) -> HierarchicalVAE:
    """A hierarchy with a linear encoder and decoder, linear networks between the layers whose
    outputs beyond each layer's mean are constant (scale rows, and an IAF's context rows,
    zeroed and kept at zero in training by a gradient mask), and a Gaussian likelihood of
    fixed standard deviation ``sigma``. ``options``: the posterior's (e.g. ``posterior="iaf"``)."""
    read = sizes[0] if decoder_reads == "bottom" else sum(sizes)
    config = ModelConfig.from_options(
        (data_dim,),
        sizes[0],
        model="hierarchy",
        upper_layers=list(sizes[1:]),
        layer_hidden=[],
        inference=inference,
        decoder_reads=decoder_reads,
        likelihood="gaussian",
        gaussian_scale=sigma,
        **options,
    )
    features = encoder_features(sizes[0], inference, config.posterior)
    model = HierarchicalVAE.from_config(
        config, encoder=nn.Linear(data_dim, features), decoder=nn.Linear(read, data_dim)
    )
    for layer, size in _layers(model):
        linear = layer.net.layers[0]
        mask = torch.ones_like(linear.weight)
        mask[size:] = 0
        with torch.no_grad():
            linear.weight.mul_(mask)
        linear.weight.register_hook(lambda grad, mask=mask: grad * mask)
    return model


def _layers(model: HierarchicalVAE) -> list[tuple[LayerNetwork, int]]:
    """Each network between the layers, with the size of the layer whose parameters it
    computes (its first outputs are that layer's mean)."""
    posterior, sizes = model.posterior, model.layer_sizes
    below = list(zip(model.prior.conditionals, sizes[:-1], strict=True))
    if posterior.inference == "x-and-above":
        given_above = zip(posterior.given_above, sizes[:-1], strict=True)
        return [*below, (posterior.top, sizes[-1]), *given_above]
    return [*below, *zip(posterior.upward, sizes[1:], strict=True)]


def _linear(layer: LayerNetwork) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(M, m, s)``: the layer's N(M h + m, diag s²), from a linear network whose scale rows
    are zero."""
    linear = layer.net.layers[0]
    if len(layer.net.layers) != 1:
        raise TypeError("closed forms need linear networks between the layers")
    weight, bias = linear.weight.double(), linear.bias.double()
    d = len(bias) // 2
    if weight[d:].abs().max() > 0:
        raise TypeError("closed forms need constant scales between the layers")
    return weight[:d], bias[:d], F.softplus(bias[d:]) + MIN_SCALE


def _offsets(sizes: tuple[int, ...]) -> list[slice]:
    starts = layer_starts(sizes)
    return [slice(start, start + size) for start, size in zip(starts, sizes, strict=True)]


def _gaussian(chain: Chain) -> MultivariateNormal:
    """z = A z + c + diag(t) ε as N((I − A)⁻¹ c, L Lᵀ), L = (I − A)⁻¹ diag(t)."""
    a, c, t = chain
    inverse = torch.linalg.inv(torch.eye(a.shape[-1], dtype=a.dtype) - a)
    mean = (inverse @ c.unsqueeze(-1)).squeeze(-1)
    return MultivariateNormal(
        mean, scale_tril=torch.linalg.cholesky(_square(inverse * t.unsqueeze(-2)))
    )


def _square(root: torch.Tensor) -> torch.Tensor:
    covariance = root @ root.transpose(-1, -2)
    return 0.5 * (covariance + covariance.transpose(-1, -2))


def prior(model: HierarchicalVAE) -> MultivariateNormal:
    """p(z) = N(m_p, Σ_p) over the layers concatenated."""
    sizes = model.layer_sizes
    spans, total = _offsets(sizes), sum(sizes)
    a = torch.zeros(total, total, dtype=torch.float64)
    c = torch.zeros(total, dtype=torch.float64)
    t = torch.ones(total, dtype=torch.float64)
    for level, conditional in enumerate(model.prior.conditionals):
        weight, bias, scale = _linear(conditional)
        a[spans[level], spans[level + 1]] = weight
        c[spans[level]], t[spans[level]] = bias, scale
    return _gaussian((a, c, t))


@torch.no_grad()
def posterior_approximation(model: HierarchicalVAE, x: torch.Tensor) -> MultivariateNormal:
    """q(z|x) as a full-covariance Gaussian, batch ``(B,)`` (for diagonal Gaussian layers)."""
    if model.config.posterior.name != "diagonal-gaussian":
        raise TypeError("closed forms need diagonal Gaussian layers")
    params = [p.double() for p in model.posterior_parameters(x.to(_dtype(model)))]
    sizes, batch = model.layer_sizes, len(x)
    spans, total = _offsets(sizes), sum(sizes)
    a = torch.zeros(batch, total, total, dtype=torch.float64)
    c = torch.zeros(batch, total, dtype=torch.float64)
    t = torch.zeros(batch, total, dtype=torch.float64)
    if model.posterior.inference == "x-and-above":
        return _gaussian(_given_x_and_above(model, params[0], (a, c, t)))
    if model.posterior.inference == "bottom-up":
        c[:, spans[0]], t[:, spans[0]] = params[0], params[1]
        for level, network in enumerate(model.posterior.upward, start=1):
            weight, bias, scale = _linear(network)
            a[:, spans[level], spans[level - 1]] = weight
            c[:, spans[level]], t[:, spans[level]] = bias, scale
    else:
        top = len(sizes) - 1
        c[:, spans[top]], t[:, spans[top]] = params[2 * top], params[2 * top + 1]
        for level, conditional in enumerate(model.prior.conditionals):
            weight, bias, scale = _linear(conditional)
            loc_hat, scale_hat = params[2 * level], params[2 * level + 1]
            variance = (scale_hat.pow(-2) + scale.pow(-2)).reciprocal()  # precision weighting
            a[:, spans[level], spans[level + 1]] = (variance / scale.square()).unsqueeze(
                -1
            ) * weight
            c[:, spans[level]] = variance * (loc_hat / scale_hat.square() + bias / scale.square())
            t[:, spans[level]] = variance.sqrt()
    return _gaussian((a, c, t))


def _given_x_and_above(model: HierarchicalVAE, features: torch.Tensor, chain: Chain) -> Chain:
    """q(z_L|x) = N(M f + m, s²), q(z_l|x, z_{l+1}) = N(M [f, z_{l+1}] + m, s²): each layer a
    linear function of the encoder's features f and the layer above."""
    a, c, t = chain
    sizes, posterior = model.layer_sizes, model.posterior
    spans, width = _offsets(sizes), features.shape[-1]
    weight, bias, scale = _linear(posterior.top)
    c[:, spans[-1]], t[:, spans[-1]] = features @ weight.T + bias, scale
    for level, network in enumerate(posterior.given_above):
        weight, bias, scale = _linear(network)
        c[:, spans[level]] = features @ weight[:, :width].T + bias
        a[:, spans[level], spans[level + 1]] = weight[:, width:]
        t[:, spans[level]] = scale
    return a, c, t


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _projection(model: HierarchicalVAE) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(P, b, σ)``: the decoder's mean P z + b for the whole z, and σ."""
    weight, bias, sigma = linear_decoder(model)
    projection = torch.zeros(len(bias), model.latent_dim, dtype=torch.float64)
    projection[:, : weight.shape[1]] = weight
    return projection, bias, sigma


def log_px(model: HierarchicalVAE, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x), ``(B,)``."""
    projection, bias, sigma = _projection(model)
    p = prior(model)
    covariance = projection @ p.covariance_matrix @ projection.T
    covariance = covariance + sigma**2 * torch.eye(len(bias), dtype=torch.float64)
    return MultivariateNormal(projection @ p.loc + bias, covariance).log_prob(x.double())


def posterior(model: HierarchicalVAE, x: torch.Tensor) -> MultivariateNormal:
    """The true posterior p(z|x), batch ``(B,)``."""
    projection, bias, sigma = _projection(model)
    p = prior(model)
    prior_precision = p.precision_matrix
    precision = prior_precision + projection.T @ projection / sigma**2
    information = prior_precision @ p.loc + (x.double() - bias) @ projection / sigma**2
    return MultivariateNormal(
        torch.linalg.solve(precision, information.T).T, precision_matrix=precision
    )


def _expected_log_normal(
    k: torch.Tensor, offset: torch.Tensor, covariance: torch.Tensor, q: MultivariateNormal
) -> torch.Tensor:
    """E_q[log N(K z + k; 0, C)] = log N(K μ + k; 0, C) − ½ tr(C⁻¹ K S Kᵀ), ``(B,)``."""
    mean = q.loc @ k.T + offset
    centred = MultivariateNormal(torch.zeros(len(covariance), dtype=torch.float64), covariance)
    spread = k @ q.covariance_matrix @ k.T
    return centred.log_prob(mean) - 0.5 * torch.linalg.solve(covariance, spread).diagonal(
        dim1=-2, dim2=-1
    ).sum(-1)


def exact_elbo(model: HierarchicalVAE, x: torch.Tensor) -> ELBOTerms:
    """ELBO(x), E_q[log p(x|z)] and KL(q(z|x) || p(z)) in closed form, ``(B,)`` each."""
    projection, bias, sigma = _projection(model)
    q, p = posterior_approximation(model, x), prior(model)
    noise = sigma**2 * torch.eye(len(bias), dtype=torch.float64)
    reconstruction = _expected_log_normal(projection, bias - x.double(), noise, q)
    eye = torch.eye(model.latent_dim, dtype=torch.float64)
    rate = -_expected_log_normal(eye, -p.loc, p.covariance_matrix, q) - q.entropy()
    return ELBOTerms(reconstruction - rate, reconstruction, rate)


def posterior_kl(model: HierarchicalVAE, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z|x)) in closed form, ``(B,)``: the ELBO's gap."""
    return kl_divergence(posterior_approximation(model, x), posterior(model, x))
