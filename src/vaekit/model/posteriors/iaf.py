"""An inverse autoregressive flow on top of the diagonal Gaussian (Kingma et al. 2016).

    z_0 = μ(x) + σ(x) ⊙ ε,                                  ε ~ N(0, I)
    z_t = s_t ⊙ z_{t−1} + (1 − s_t) ⊙ m_t,   (m_t, s_t) = MADE_t(z_{t−1}, h(x)),  t = 1..T
    log q(z_T|x) = log N(z_0; μ, σ²) − Σ_t Σ_j log s_{t,j}

with s_t = sigmoid(·) (the paper's numerically stable update) and each MADE autoregressive
(m_{t,j}, s_{t,j} depend on z_{t−1,<j} and the context h(x) only), so each step's Jacobian is
triangular with diagonal s_t and log q is exact. The order of the dimensions is reversed
between steps. The MADE has a masked hidden layer fed with the context and a direct masked
linear path from z to its outputs, so with ``flow_hidden=0`` every step is affine and q can be
any full-covariance Gaussian: the linear-Gaussian test closes the mean-field gap with it.

Draws and their log q need one pass per step. log q at another z (:meth:`log_prob`) inverts
the flow one dimension at a time: D network passes per step, for tests and users, never in
the training step. The rate is the Monte Carlo one (no closed form exists).

log q at stopped parameters (``--gradient stl|dreg``) is a function of z_T through the
inverse flow, z_{t−1} = f_t⁻¹(z_t): its value is the draw's log q, and its gradient needs
only the inverse's Jacobian, J_t⁻¹ (J_t = ∂z_t/∂z_{t−1}, triangular). Each step's J_t is built
from its MADE's weights (a ``(…, D, D)`` matrix) and applied by a triangular solve: one more
network pass per step and no D-fold inversion. Forming J_t takes B·D²·H multiplications, D
times a MADE pass's, so with STL ``fast`` + IAF's step (D = 50, H = 320) costs about 1.6× its
plain step (``benchmarks/model_parts.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from vaekit.checks import fits_in_memory, option, positive_int
from vaekit.model.contract import POSTERIORS, Posterior, PosteriorParameters, call_stopped
from vaekit.model.gaussian import log_density, reparameterised_log_density
from vaekit.model.posteriors.as_distribution import PosteriorDistribution
from vaekit.model.posteriors.diagonal_gaussian import MIN_SCALE

GATE_BIAS = 2.0
"""s_t starts at sigmoid(2) ≈ 0.88 (the paper's "forget-gate" bias): each step starts close
to the identity."""


@dataclass
class IAFOptions:
    """flow_steps: T; flow_hidden: each MADE's hidden units (0: affine steps); flow_context:
    the size of the context h(x) the encoder outputs beside μ and σ."""

    flow_steps: int = option(2, "IAF steps on top of the diagonal Gaussian")
    flow_hidden: int = option(320, "hidden units of each IAF step's MADE (0: affine steps)")
    flow_context: int = option(50, "size of the context h(x) the encoder gives the IAF steps")

    def __post_init__(self) -> None:
        positive_int("flow_steps", self.flow_steps)
        positive_int("flow_hidden", self.flow_hidden, allow_zero=True)
        positive_int("flow_context", self.flow_context)


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class _Step(nn.Module):
    """One autoregressive step's MADE: ``(z (…, D), h (…, H)) -> (m, gate)``, output j
    depending on z_{<j} and h only: a direct masked linear path from z, a linear path from h
    and, with ``hidden`` units, a masked hidden layer fed with both. Without hidden units the
    gate depends on h alone, so the step is an affine map of z (given x)."""

    def __init__(self, dim: int, hidden: int, context: int) -> None:
        super().__init__()
        order = torch.arange(1, dim + 1)
        earlier = order[:, None] > order[None, :]
        self.direct = _MaskedLinear(torch.cat([earlier, earlier & (hidden > 0)]))
        self.from_context = nn.Linear(context, 2 * dim)
        for layer in (self.direct, self.from_context):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        with torch.no_grad():
            self.from_context.bias[dim:] = GATE_BIAS
        self.hidden = hidden
        if hidden:
            degree = torch.arange(hidden) % dim  # degree 0: context only, for every output
            self.into = _MaskedLinear(degree[:, None] >= order[None, :])
            self.context = nn.Linear(context, hidden)
            self.out = _MaskedLinear((order[:, None] > degree[None, :]).repeat(2, 1))
            nn.init.normal_(self.out.weight, std=0.01)
            nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.direct(z) + self.from_context(context)
        if self.hidden:
            out = out + self.out(F.elu(self.into(z) + self.context(context)))
        return out.chunk(2, dim=-1)

    @staticmethod
    def update(z: torch.Tensor, shift: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The step's map given its outputs: z_t = s ⊙ z + (1 − s) ⊙ m, s = sigmoid(gate)."""
        return torch.sigmoid(gate) * z + torch.sigmoid(-gate) * shift

    @torch.no_grad()
    def flow_jacobian(
        self, z: torch.Tensor, shift: torch.Tensor, gate: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """J = ∂z_t/∂z_{t−1} ``(…, D, D)`` of z_t = s ⊙ z + (1 − s) ⊙ m at the step's input
        ``z`` and outputs ``(shift, gate)`` = (m, logit s): diag(s) + diag(1 − s) ∂m/∂z +
        diag(s(1 − s)(z − m)) ∂gate/∂z, lower triangular. The two halves' output weights are
        combined row by row before the product with the hidden layer's, one (…·D, H) × (H, D)
        matrix product: half the multiplications of forming the MADE's whole Jacobian first
        (``fast`` + IAF's STL step 2.07× the plain VAE's step against 2.64×, medians of 3
        alternated runs of ``benchmarks/model_parts.py``: ``iaf-stl-jacobian-ab.log``). Tried
        and left: the hidden units in 4 groups by degree, each product over its nonzero block
        only (0.30 of the multiplications at D = 50), was ~10% faster eager and 2–3× slower
        compiled (``iaf-stl-jacobian-groups-ab.log``, ``gradients-iaf-degree-groups.log``);
        solving by blocked forward substitution, forming only J's diagonal blocks (4 at
        D = 50, 1/10 of the multiplications; commit 057062c), was no faster eager and slower
        compiled (STL 0.59 of the plain step against 0.73, DReG 0.41 against 0.64): on a
        machine whose matrix products run at 200–290 GFLOP/s, one large product costs less
        than a loop of small ones (``gradients-iaf-blocked-ab.log``,
        ``iaf-stl-blocked-ab.log``)."""
        keep, forget = torch.sigmoid(gate), torch.sigmoid(-gate)
        by_shift = forget.unsqueeze(-1)
        by_gate = (keep * forget * (z - shift)).unsqueeze(-1)
        direct_shift, direct_gate = (self.direct.weight * self.direct.mask).chunk(2)
        jacobian = torch.diag_embed(keep) + by_shift * direct_shift + by_gate * direct_gate
        if self.hidden:
            pre = self.into(z) + self.context(context)
            slope = torch.where(pre > 0, 1.0, pre.exp()).unsqueeze(-2)  # elu′
            out_shift, out_gate = (self.out.weight * self.out.mask).chunk(2)
            rows = (by_shift * out_shift).addcmul_(by_gate, out_gate).mul_(slope)  # one (…, D, H)
            jacobian = jacobian + rows @ (self.into.weight * self.into.mask)
        return jacobian


@POSTERIORS.register("iaf", IAFOptions)
class IAFPosterior(Posterior):
    """q(z|x): --flow-steps inverse autoregressive steps on N(μ(x), diag σ(x)²), conditioned on a
    context h(x) (Monte Carlo rate; log q exact)."""

    log_prob_is_cheap = False

    def __init__(self, latent_dim: int, options: IAFOptions) -> None:
        super().__init__()
        self.noise_dim = latent_dim
        dim, hidden, context = latent_dim, options.flow_hidden, options.flow_context
        weights = options.flow_steps * (
            2 * dim * (dim + context + hidden) + hidden * (dim + context)
        )
        # float32 weights, their gradients, Adam's two moments, and masks of at most one each
        fits_in_memory(f"IAF steps of {weights:,} weights", 20 * weights)
        self.steps = nn.ModuleList(
            _Step(latent_dim, options.flow_hidden, options.flow_context)
            for _ in range(options.flow_steps)
        )

    @staticmethod
    def encoder_width(latent_dim: int, options: Any) -> int:
        return 2 * latent_dim + options.flow_context

    def parameters_from(self, features: torch.Tensor) -> PosteriorParameters:
        """``(μ, σ, h)`` from features ``[μ, s, h]``: ``(B, D)``, ``(B, D)``, ``(B, H)``."""
        dim = self.noise_dim
        loc, raw_scale, context = features.split([dim, dim, features.shape[-1] - 2 * dim], -1)
        return loc, F.softplus(raw_scale) + MIN_SCALE, context

    def sample_and_log_prob(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z, log_q, _ = self._flow(params, noise)
        return z, log_q

    def _flow(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, ...]]]:
        """``(z_T, log q(z_T|x), [(z_{t−1} in step t's order, m_t, gate_t) for each t])``."""
        loc, scale, context = params
        z = loc + scale * noise
        log_q = reparameterised_log_density(noise, scale)
        path = []
        for t, step in enumerate(self.steps):
            z = _reorder(z, t)
            shift, gate = step(z, context)
            path.append((z, shift, gate))
            z = step.update(z, shift, gate)
            log_q = log_q - F.logsigmoid(gate).sum(-1)
            z = _reorder(z, t)
        return z, log_q, path

    @property
    def has_stopped_log_prob(self) -> bool:
        return True

    def sample_and_stopped_log_prob(
        self, params: PosteriorParameters, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z_T and log q(z_T|x) at stopped parameters (μ, σ, h and every step's weights; see
        :meth:`stopped_log_prob`), reusing the draw's path."""
        z, _, path = self._flow(params, noise)
        return z, self._stopped_log_prob(tuple(p.detach() for p in params), z, path)

    def stopped_log_prob(
        self, params: PosteriorParameters, z: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """log q(z_T | μ, σ, h) with every step's weights stopped and ``params`` as given:
        z_{t−1} = z̄_{t−1} + J_t⁻¹ (z_t − z̄_t − (f_t(z̄_{t−1}, h) − z̄_t)), with z̄ the draw's
        detached values (its path, found again from ``noise``), has the inverse flow's value
        and first derivatives in z_t and in a live context h (the second term, ∂z_{t−1}/∂h =
        −J_t⁻¹ ∂f_t/∂h, is left out when h is detached). So log q's gradient reaches the
        encoder and the steps through z_T (and live parameters) only; tested against the flow
        inverted dimension by dimension on a frozen copy, in float64."""
        with torch.no_grad():
            _, _, path = self._flow(tuple(p.detach() for p in params), noise)
        return self._stopped_log_prob(params, z, path)

    def _stopped_log_prob(
        self, params: PosteriorParameters, z: torch.Tensor, path: list[tuple[torch.Tensor, ...]]
    ) -> torch.Tensor:
        loc, scale, context = params
        context = context.expand(*z.shape[:-1], context.shape[-1])
        current, log_det = z, torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for t in reversed(range(len(self.steps))):
            step, output = self.steps[t], _reorder(current, t)
            drawn, shift, gate = (value.detach() for value in path[t])
            moved = output - output.detach()
            if context.requires_grad:
                mapped = step.update(drawn, *call_stopped(step, drawn, context))
                moved = moved - (mapped - mapped.detach())
            jacobian = step.flow_jacobian(drawn, shift, gate, context)
            previous = drawn + _solve_lower(jacobian, moved)
            _, gate = call_stopped(step, previous, context)
            log_det = log_det + F.logsigmoid(gate).sum(-1)
            current = _reorder(previous, t)
        return log_density(current, loc, scale) - log_det

    def log_prob(self, params: PosteriorParameters, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) at any ``z (..., B, D)``: the flow inverted dimension by dimension (each
        z_{t−1,j} follows from z_{t,j} once z_{t−1,<j} is known); D passes per step."""
        loc, scale, context = params
        context = context.expand(*z.shape[:-1], context.shape[-1])
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for t in reversed(range(len(self.steps))):
            z, step_log_det = self._invert_step(t, _reorder(z, t), context)
            z = _reorder(z, t)
            log_det = log_det + step_log_det
        return log_density(z, loc, scale) - log_det

    def _invert_step(
        self, t: int, z: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        columns: list[torch.Tensor] = []
        for j in range(z.shape[-1]):
            known = torch.cat([*columns, torch.zeros_like(z[..., j:])], -1)
            shift, gate = self.steps[t](known, context)  # output j sees known[<j] only
            columns.append(
                (
                    (z[..., j] - torch.sigmoid(-gate[..., j]) * shift[..., j])
                    / torch.sigmoid(gate[..., j])
                ).unsqueeze(-1)
            )
        previous = torch.cat(columns, -1)
        shift, gate = self.steps[t](previous, context)
        return previous, F.logsigmoid(gate).sum(-1)

    def representative(self, params: PosteriorParameters) -> torch.Tensor:
        """The flow's image of the base mean μ (E_q[z] has no closed form); ``(B, D)``."""
        return self.rsample(params, torch.zeros_like(params[0]).unsqueeze(0))[0]

    def distribution(self, params: PosteriorParameters) -> Distribution:
        """q(z|x) as a torch distribution; its ``log_prob`` inverts the flow (slow: for
        users)."""
        return PosteriorDistribution(self, params)


def _reorder(z: torch.Tensor, step: int) -> torch.Tensor:
    """The dimensions reversed on odd steps (its own inverse)."""
    return z.flip(-1) if step % 2 else z


def _solve_lower(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """``matrix⁻¹ vector`` for lower-triangular ``matrix (…, D, D)`` and ``vector (…, D)``."""
    solved = torch.linalg.solve_triangular(matrix, vector.unsqueeze(-1), upper=False)
    return solved.squeeze(-1)
