"""Latent codes of a dataset, as ``vaekit encode`` writes them: q(z|x)'s means or draws, of
every latent layer or one, and (``--as-data``) both splits as a dataset that another model
trains on, e.g. M2 on a VAE's codes (Kingma et al. 2014's M1+M2).

Units: the codes are z's coordinates, as the model's prior and posterior have them;
``standardize`` rescales each unit to mean 0 and standard deviation 1 over the training codes,
so a density of the standardised codes differs from one of the codes themselves by
Σ_d log std_d (nats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from vaekit.data import Dataset
from vaekit.data.batch import Batch
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.diagnostics import active_units
from vaekit.evaluation.evaluate import evaluation_batch
from vaekit.model.vae import VAE
from vaekit.objectives.elbo import standard_noise

CHUNK = 1000  # examples encoded at a time


@dataclass(frozen=True)
class CodeOptions:
    """What ``encode`` writes. draw: a draw z ~ q(z|x) instead of the mean; layer: one latent
    layer (0 is z_1, the layer the decoder reads) or every layer, bottom to top (None);
    active_only: only the units whose training means vary with x; standardize: each unit at
    mean 0 and standard deviation 1 over the training codes (the last two for datasets)."""

    draw: bool = False
    layer: int | None = None
    active_only: bool = False
    standardize: bool = False


class Codes(NamedTuple):
    """The codes written (the means, or draws), the means E_q[z|x], and q's standard
    deviations where q of the codes is one diagonal Gaussian given x (else None);
    ``(N, D)``."""

    values: np.ndarray
    means: np.ndarray
    scales: np.ndarray | None


def check_layer(model: VAE, layer: int | None) -> None:
    """Refuse a ``layer`` (0-based) that the model does not have, in one line."""
    count = len(model.layer_sizes)
    if layer is not None and not 0 <= layer < count:
        raise ConfigError(
            f"--layer {layer + 1}: the model has {count} latent layer{'s' * (count > 1)}; "
            f"choose 1 (z_1, the layer the decoder reads) to {count}, or leave it out for all"
        )


@torch.no_grad()
def latent_codes(
    model: VAE, batch: Batch, options: CodeOptions, generator: torch.Generator
) -> Codes:
    """The :class:`Codes` of every example of ``batch``, :data:`CHUNK` at a time."""
    check_layer(model, options.layer)
    sizes = model.layer_sizes
    # one layer (the chosen one, or a model's only one), whose scales go with its means where
    # q of it is one diagonal Gaussian given x alone; or every layer (None), with none
    level = 0 if options.layer is None and len(sizes) == 1 else options.layer
    columns = slice(None) if level is None else slice(sum(sizes[:level]), sum(sizes[: level + 1]))
    means, draws, scales = [], [], []
    for begin in range(0, len(batch.x), CHUNK):
        params = model.posterior_parameters(batch.select(slice(begin, begin + CHUNK)))
        means.append(model.posterior.representative(params)[:, columns])
        if options.draw:
            noise = standard_noise(model, 1, params[0], generator)
            draws.append(model.posterior.rsample(params, noise)[0][:, columns])
        gaussian = None if level is None else model.posterior.layer_given_x(params, level)
        if gaussian is not None:
            scales.append(gaussian[1])
    mean = torch.cat(means).numpy()
    return Codes(
        torch.cat(draws).numpy() if options.draw else mean,
        mean,
        torch.cat(scales).numpy() if scales else None,
    )


def codes_as_data(
    model: VAE, data: Dataset, options: CodeOptions, generator: torch.Generator
) -> tuple[dict[str, np.ndarray | None], str]:
    """``encode --as-data``'s columns: both splits' codes and labels, the training codes'
    scales (with the means; the test codes are evaluated at their means), with
    ``active_only`` only the active units (Cov_x E_q[z_d] > 0.01 over the training examples,
    Burda et al.'s: Kingma et al. 2014 kept those for M1+M2), with ``standardize`` every unit
    standardised (``x_mean``, ``x_std`` say how); and a note of what was done."""
    columns: dict[str, np.ndarray | None] = {}
    codes = {}
    for split in ("train", "test"):
        batch = evaluation_batch(model, data, split)
        codes[split] = latent_codes(model, batch, options, generator)
        columns[f"x_{split}"] = codes[split].values
        columns[f"y_{split}"] = None if batch.y is None else batch.y.numpy()
    columns["x_train_scale"] = None if options.draw else codes["train"].scales
    note = ""
    if options.active_only:
        note = _keep_active(columns, codes["train"].means)
    if options.standardize:
        note += _standardize(columns)
    return columns, note


def _keep_active(columns: dict[str, np.ndarray | None], means: np.ndarray) -> str:
    """Keep the active units' columns (chosen from the training means, also for draws)."""
    active = active_units(torch.from_numpy(means)).numpy()
    if not active.any():
        raise DataError(
            f"none of the {len(active)} latent units is active (Cov_x E_q[z_d] > 0.01): the "
            "codes would be empty; leave out --active-only, or train the model longer"
        )
    for name in ("x_train", "x_test", "x_train_scale"):
        if columns[name] is not None:
            columns[name] = columns[name][:, active]
    return f"; kept the {active.sum()} active units of {len(active)}"


def _standardize(columns: dict[str, np.ndarray | None]) -> str:
    """Each unit minus its training mean, over its training standard deviation (the scales
    too); the two are written as ``x_mean`` and ``x_std`` (float64)."""
    assert columns["x_train"] is not None
    train = columns["x_train"].astype(np.float64)
    mean, std = train.mean(0), train.std(0)
    constant = np.flatnonzero(std == 0)
    if constant.size:
        raise DataError(
            f"unit {constant[0]} of the codes is the same for every training example: it "
            "cannot be standardised; add --active-only"
        )
    for name in ("x_train", "x_test"):
        columns[name] = ((columns[name] - mean) / std).astype(np.float32)
    if columns["x_train_scale"] is not None:
        columns["x_train_scale"] = (columns["x_train_scale"] / std).astype(np.float32)
    columns["x_mean"], columns["x_std"] = mean, std
    return "; standardised with the training codes' mean and standard deviation per unit"
