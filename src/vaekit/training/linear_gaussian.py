"""Fit the linear-Gaussian VAE (or hierarchy) whose every term is exact (for ``vaekit
identity``)."""

from __future__ import annotations

import torch

from vaekit.data.dataset import Dataset
from vaekit.evaluation import linear_gaussian as lg
from vaekit.evaluation import linear_gaussian_hierarchy as lgh
from vaekit.model.vae import VAE
from vaekit.training.trainer import fit


def fit_linear_gaussian(
    data: Dataset,
    latent_dim: int,
    epochs: int,
    seed: int = 0,
    progress: bool = False,
    layers: int = 1,
) -> VAE:
    """A linear-Gaussian VAE fitted by ELBO maximisation to the flattened data (float64);
    with ``layers`` > 1 a top-down hierarchy whose layers above z_1 (of ``latent_dim``
    dimensions) halve in size."""
    flat = Dataset(
        data.name,
        data.train_x.reshape(len(data.train_x), -1).double(),
        data.test_x.reshape(len(data.test_x), -1).double(),
    )
    sigma = lg.ppca_sigma(flat.train_x, latent_dim)
    torch.manual_seed(seed)
    if layers == 1:
        model = lg.linear_gaussian_vae(flat.shape[0], latent_dim, sigma).double()
    else:
        sizes = [max(1, latent_dim // 2**level) for level in range(layers)]
        model = lgh.linear_gaussian_hierarchy(flat.shape[0], sizes, sigma=sigma).double()
    with torch.no_grad():
        model.decoder.bias.copy_(flat.train_x.mean(0))
    fit(model, flat, epochs=epochs, seed=seed, lr=3e-3, batch_size=128, progress=progress)
    return model
