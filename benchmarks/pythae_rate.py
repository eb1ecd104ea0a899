"""One epoch of pythae's VAE TrainingPipeline on the same networks, data, batch and Adam as
``train_throughput.py``; prints the training examples per second, wall-clock end to end (the
pipeline's data checks, per-epoch evaluation on the test images and model saving included,
as vaekit's end-to-end number includes its held-out ELBO and checkpoint).

Run by ``train_throughput.py`` in the interpreter that has pythae (``--pythae-python``):

    python benchmarks/pythae_rate.py DATA_DIR HIDDEN LATENT ACTIVATION BATCH [cpu|cuda]

DATA_DIR holds train.npy and test.npy (float32, (N, 1, 28, 28), values in [0, 1]).
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig
from torch import nn


def mlp(sizes: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    return [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), activation())]


class Encoder(BaseEncoder):
    def __init__(self, hidden: list[int], latent: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), *mlp([784, *hidden], activation))
        self.mu, self.log_var = nn.Linear(hidden[-1], latent), nn.Linear(hidden[-1], latent)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.body(x)
        return ModelOutput(embedding=self.mu(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
    def __init__(self, hidden: list[int], latent: int, activation: type[nn.Module]) -> None:
        super().__init__()
        back = [latent, *reversed(hidden)]
        self.body = nn.Sequential(*mlp(back, activation), nn.Linear(back[-1], 784), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.body(z).reshape(-1, 1, 28, 28))


def main() -> None:
    data_dir, hidden_text, latent_text, activation_name, batch_text = sys.argv[1:6]
    device = sys.argv[6] if len(sys.argv) > 6 else "cpu"
    hidden = [int(width) for width in hidden_text.split(",")]
    latent, batch = int(latent_text), int(batch_text)
    activation = nn.ReLU if activation_name == "relu" else nn.Tanh
    train = np.load(Path(data_dir) / "train.npy")
    test = np.load(Path(data_dir) / "test.npy")
    torch.manual_seed(0)
    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=latent, reconstruction_loss="bce")
    model = VAE(config, Encoder(hidden, latent, activation), Decoder(hidden, latent, activation))
    with tempfile.TemporaryDirectory() as output_dir:
        training = BaseTrainerConfig(
            output_dir=output_dir,
            num_epochs=1,
            learning_rate=1e-3,
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=1000,
            no_cuda=device != "cuda",
        )
        start = time.perf_counter()
        TrainingPipeline(model=model, training_config=training)(train_data=train, eval_data=test)
        print(len(train) / (time.perf_counter() - start))


if __name__ == "__main__":
    main()
