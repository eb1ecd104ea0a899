"""A hierarchy's latent layers, each measured: its rate and its active units."""

from __future__ import annotations

from typing import Any

import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.diagnostics import active_units
from vaekit.objectives.elbo import standard_noise


def layer_starts(sizes: tuple[int, ...] | list[int]) -> list[int]:
    """Where each latent layer begins in z, the layers concatenated bottom to top."""
    return [sum(sizes[:level]) for level in range(len(sizes))]


@torch.no_grad()
def layer_record(model: Any, batch: torch.Tensor | Batch, batch_size: int = 1000) -> dict[str, Any]:
    """For each latent layer l of ``model`` (1 = the bottom), ``rate_z{l}``: the mean over the
    examples of its rate E_q[log q(z_l|·) − log p(z_l|z_{l+1})] in nats (one draw per
    example), and ``active_z{l}``: its active units (Cov_x E_q[z_d] > 0.01)."""
    batch = as_batch(batch)
    was_training = model.training
    model.eval()
    rates, means = [], []
    for start in range(0, len(batch.x), batch_size):
        part = batch.select(slice(start, start + batch_size))
        params = model.posterior_parameters(part)
        noise = standard_noise(model, 1, params[0])
        rates.append(model.rate_per_layer(params, noise).double().sum(0))
        means.append(model.posterior.representative(params))
    model.train(was_training)
    rate = torch.stack(rates).sum(0) / len(batch.x)
    active = active_units(torch.cat(means)).split(model.layer_sizes)
    record: dict[str, Any] = {}
    for level, (value, on) in enumerate(zip(rate.tolist(), active, strict=True), start=1):
        record[f"rate_z{level}"] = value
        record[f"active_z{level}"] = int(on.sum())
    return record


def describe_layers(record: dict[str, Any], sizes: tuple[int, ...], prefix: str = "") -> str:
    """``z1 3.12 nats 8/16 active, z2 ...`` from :func:`layer_record`'s keys (with ``prefix``),
    with a layer's KL weight (``beta_z2``: a warm-up per layer) where it is not 1."""
    return ", ".join(
        f"z{level} {record[f'{prefix}rate_z{level}']:.2f} nats "
        f"{record[f'{prefix}active_z{level}']}/{size} active"
        + (f" (weighted ×{weight:.2f})" if (weight := record.get(f"beta_z{level}", 1)) != 1 else "")
        for level, size in enumerate(sizes, start=1)
    )
