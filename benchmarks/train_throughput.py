"""Training throughput: vaekit's loop against a pytorch/examples-style loop and a bare loop.

- vaekit: ``Trainer`` as ``vaekit train`` runs it (progress bar, per-epoch held-out ELBO on the
  10,000 test images, metrics.jsonl, checkpoint each epoch), its second epoch timed
  wall-clock end to end; eager (``--compile off``, and ``auto`` for runs under 50,000 steps)
  and compiled (``--compile on``, and ``auto`` for longer runs), with the start-up that
  compiling adds to the first epoch.
- peer: pytorch/examples' vae/main.py, epoch for epoch: a per-sample Dataset that converts
  each image as torchvision's MNIST + ToTensor do (uint8 tensor -> PIL -> float tensor, with
  its label) and a DataLoader; sigmoid outputs and binary_cross_entropy; ``loss.item()`` every
  step and a log line every 10 batches; then its test pass over the 10,000 test images through
  the same kind of loader (on CUDA with its one worker process and pinned memory, as it
  does there). Same networks, batch and Adam. (Left out: its two PNGs per epoch,
  torchvision's save_image, not installable beside the CPU torch here; a few ms.)
- bare: tensors in memory, random batch indexing, Bernoulli draw of the batch, forward,
  backward and fused Adam; nothing else.
- pythae: pythae's VAE TrainingPipeline on the same networks (``pythae_rate.py``, run in the
  interpreter given by ``--pythae-python``; this one if it has pythae, else skipped).

Medians of several runs, alternating the loops. Prints examples/s, the ratios, and the
achieved GFLOP/s against a measured matmul peak.

    python benchmarks/train_throughput.py            # both architectures, batch 20/128/512
    python benchmarks/train_throughput.py --quick    # 784-400-20, batch 128, < 1 minute
    python benchmarks/train_throughput.py --device cuda   # on a GPU, the data on it
    python benchmarks/train_throughput.py --gradients     # STL and DReG against reparam
    python benchmarks/train_throughput.py --gradients --rows 5 6   # only the IAF's rows
    python benchmarks/train_throughput.py --gradients --rows 7 8   # IAF layers in a hierarchy
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import io
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import itertools

from common import bare_rate, describe, matmul_peak, mnist_or_synthetic, synchronize, vae_flops

import vaekit
from vaekit.model import ModelConfig, build_model
from vaekit.training.config import TrainConfig
from vaekit.training.trainer import Trainer

ARCHITECTURES = {
    "784-400-20 relu": ([400], 20, "relu"),
    "784-200-200-50 tanh": ([200, 200], 50, "tanh"),
}


class PeerVAE(nn.Module):
    """pytorch/examples' VAE, generalised to several hidden layers."""

    def __init__(self, hidden: list[int], latent: int, activation: str) -> None:
        super().__init__()
        act = nn.ReLU if activation == "relu" else nn.Tanh
        sizes = [784, *hidden]
        self.encoder = nn.Sequential(
            *[m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), act())]
        )
        self.mu, self.logvar = nn.Linear(sizes[-1], latent), nn.Linear(sizes[-1], latent)
        back = [latent, *reversed(hidden)]
        self.decoder = nn.Sequential(
            *[m for a, b in itertools.pairwise(back) for m in (nn.Linear(a, b), act())],
            nn.Linear(back[-1], 784),
        )

    def loss(self, x: torch.Tensor, as_in_examples: bool = False) -> torch.Tensor:
        """The negative ELBO summed over the batch; from the logits (the bare loop), or
        ``as_in_examples``: sigmoid, then binary_cross_entropy, as pytorch/examples does."""
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        if as_in_examples:
            bce = F.binary_cross_entropy(torch.sigmoid(self.decoder(z)), x, reduction="sum")
        else:
            bce = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld


class PerSampleMNIST(torch.utils.data.Dataset):
    """torchvision's ``MNIST(transform=ToTensor())`` step for step (torchvision is not
    installable beside the CPU torch here): a uint8 tensor per image, to PIL, then ToTensor's
    conversion to a (1, 28, 28) float tensor, returned with its label."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image, label = self.images[index], int(self.labels[index])
        picture = Image.fromarray(image.numpy(), mode="L")
        tensor = torch.from_numpy(np.array(picture, np.uint8, copy=True))
        tensor = tensor.view(picture.size[1], picture.size[0], 1).permute((2, 0, 1)).contiguous()
        return tensor.to(dtype=torch.get_default_dtype()).div(255), label


def peer_rate(
    data: vaekit.Dataset, hidden, latent, activation, batch: int, device: torch.device
) -> float:
    """One epoch of pytorch/examples' vae (its train() then its test()); training examples
    per second, end to end."""
    torch.manual_seed(0)
    model = PeerVAE(hidden, latent, activation).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loader(x: torch.Tensor, y: torch.Tensor | None, shuffle: bool):
        images = (x.reshape(-1, 28, 28) * 255).round().to(torch.uint8)
        labels = y if y is not None else torch.zeros(len(images), dtype=torch.long)
        dataset = PerSampleMNIST(images, labels)
        on_gpu = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
        return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=shuffle, **on_gpu)

    train, test = loader(data.train_x, data.train_y, True), loader(data.test_x, data.test_y, False)
    log = io.StringIO()
    start = time.perf_counter()
    model.train()
    train_loss = 0.0
    for batch_index, (x, _) in enumerate(train):
        x = x.to(device)
        optimizer.zero_grad()
        loss = model.loss(x.view(-1, 784), as_in_examples=True)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        if batch_index % 10 == 0:
            print(
                f"Train Epoch: 1 [{batch_index * len(x)}]\tLoss: {loss.item() / len(x):.6f}",
                file=log,
            )
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for x, _ in test:
            test_loss += model.loss(x.to(device).view(-1, 784), as_in_examples=True).item()
    print(f"====> Test set loss: {test_loss / len(test.dataset):.4f}", file=log)
    synchronize(device)
    return len(data.train_x) / (time.perf_counter() - start)


def peer_bare_rate(
    data: vaekit.Dataset, hidden, latent, activation, batch: int, device: torch.device
) -> float:
    """The bare loop of the peer's networks, with the data on ``device``."""
    torch.manual_seed(0)
    return bare_rate(PeerVAE(hidden, latent, activation), data, batch, device)


def pythae_rate(
    python: str, data_dir: Path, hidden, latent, activation, batch: int, device: torch.device
) -> float:
    script = Path(__file__).parent / "pythae_rate.py"
    widths = ",".join(map(str, hidden))
    command = [python, str(script), str(data_dir), widths, str(latent), activation, str(batch)]
    command.append(device.type)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(output.split()[-1])


def vaekit_rates(
    data: vaekit.Dataset,
    hidden,
    latent,
    activation,
    batch: int,
    compile: str,
    device: torch.device,
    model_options: dict[str, object] | None = None,
    **train_options: object,
) -> tuple[float, float, float]:
    """Epoch 2 of a run as ``vaekit train`` makes it (``model_options``, ``train_options``:
    more of its options): (end-to-end ex/s including the held-out ELBO and checkpoint, the
    loop's own ex/s, seconds by which epoch 1 was slower: the start-up, compiling included)."""
    torch.manual_seed(0)
    options = {"hidden": hidden, "activation": activation, **(model_options or {})}
    model = build_model(ModelConfig.from_options((1, 28, 28), latent, **options))
    config = TrainConfig(
        epochs=1,
        batch_size=batch,
        compile=compile,
        device=device.type,
        data_on_device=device.type != "cpu",
        **train_options,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, data, config, Path(run_dir))
        start = time.perf_counter()
        trainer.run()
        synchronize(device)
        first = time.perf_counter() - start
        trainer.config = replace(config, epochs=2)
        start = time.perf_counter()
        history = trainer.run()
        synchronize(device)
        second = time.perf_counter() - start
    return len(data.train_x) / second, history[-1]["examples_per_s"], first - second


def table_row(
    data: vaekit.Dataset,
    name: str,
    batch: int,
    repeats: int,
    peak: float,
    pythae_python: str | None,
    data_dir: Path,
    device: torch.device,
) -> str:
    """One row of the table: medians of ``repeats`` alternating runs of every loop."""
    net = ARCHITECTURES[name]
    rates: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(repeats):
        for compile in ("off", "on"):
            whole, loop, startup = vaekit_rates(data, *net, batch, compile, device)
            rates[compile].append(whole)
            rates[f"{compile} loop"].append(loop)
            rates[f"{compile} startup"].append(startup)
        rates["peer"].append(peer_rate(data, *net, batch, device))
        rates["bare"].append(peer_bare_rate(data, *net, batch, device))
        if pythae_python:
            rates["pythae"].append(pythae_rate(pythae_python, data_dir, *net, batch, device))
    median = {key: statistics.median(values) for key, values in rates.items()}
    eager, eager_loop, ours, loop, bare, peer = (
        median[k] for k in ("off", "off loop", "on", "on loop", "bare", "peer")
    )
    pythae = median.get("pythae", math.nan)
    gflops = loop * vae_flops(net[0], net[1]) / 1e9
    return (
        f"| {name} | {batch} | {bare:,.0f} | {peer:,.0f} | {pythae:,.0f} | {eager:,.0f} "
        f"({eager_loop:,.0f}) | {ours:,.0f} ({loop:,.0f}) | {median['on startup']:.1f} | "
        f"{eager / bare:.2f} ({eager_loop / bare:.2f}) | {ours / bare:.2f} ({loop / bare:.2f}) | "
        f"{ours / peer:.2f} | {ours / pythae:.2f} | {gflops:.0f} ({100 * gflops / peak:.0f}%) |"
    )


TWO_LAYERS = {  # z_1 as the row's latent layer, and 10 units above it
    "model": "hierarchy",
    "upper_layers": [10],
    "layer_hidden": [100],
}
IAF = {"posterior": "iaf", "flow_steps": 2, "flow_hidden": 320}  # ``fast`` + IAF's flow
GRADIENT_ROWS = [
    # (architecture, latent variables, batch, objective, samples, estimators: the plain one
    # first, model options)
    ("784-400-20 relu", "one", 128, "elbo", 1, ("reparam", "stl"), {}),
    ("784-200-200-50 tanh", "one", 20, "iwae", 5, ("reparam", "dreg"), {}),
    (
        "784-400-20 relu",
        "two, top-down",
        128,
        "elbo",
        1,
        ("reparam", "stl"),
        {**TWO_LAYERS, "inference": "top-down"},
    ),
    (
        "784-200-200-50 tanh",
        "two, bottom-up",
        20,
        "iwae",
        5,
        ("reparam", "dreg"),
        {**TWO_LAYERS, "inference": "bottom-up"},
    ),
    ("784-400-20 relu", "one, IAF 2×320", 128, "elbo", 1, ("reparam", "stl"), IAF),
    ("784-200-200-50 tanh", "one, IAF 2×320", 20, "iwae", 5, ("reparam", "dreg"), IAF),
    (
        "784-400-20 relu",
        "two, bottom-up, IAF 2×320 on each",
        128,
        "elbo",
        1,
        ("reparam", "stl"),
        {**TWO_LAYERS, "inference": "bottom-up", **IAF},
    ),
    (
        "784-200-200-50 tanh",
        "two, x-and-above, IAF 2×320 on each",
        20,
        "iwae",
        5,
        ("reparam", "dreg"),
        {**TWO_LAYERS, "inference": "x-and-above", **IAF},
    ),
]
"""The gradient estimators' rows: ``fast``'s ELBO and ``burda-iwae-k5``'s IWAE setting; each
with a second latent layer (a ladder, and a stacked VAE), where log q at stopped parameters runs
the layers' networks a second time; and each with ``fast`` + IAF's flow (2 steps of 320 hidden
units), where it runs the flow backwards: one triangular solve and one MADE pass per step; and
with that flow on each of two layers (the hierarchy's stopped log q runs each layer's flow
again to find its path)."""


def gradient_rows(
    data: vaekit.Dataset, repeats: int, device: torch.device, rows: list[int]
) -> None:
    """Each estimator's training loop against the plain reparameterised one, alternated,
    eager and compiled: the cost of STL and DReG per step (``rows``: GRADIENT_ROWS' numbers,
    from 1)."""
    print(
        "\n| architecture | latent variables | batch | objective | gradient | eager loop ex/s | "
        "compiled loop ex/s | eager / reparam | compiled / reparam |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        name, latent, batch, objective, samples, estimators, model_options = GRADIENT_ROWS[row - 1]
        loops: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        for _ in range(repeats):
            for gradient, compile in itertools.product(estimators, ("off", "on")):
                options = {"objective": objective, "samples": samples, "gradient": gradient}
                network = ARCHITECTURES[name]
                rate = vaekit_rates(
                    data, *network, batch, compile, device, model_options, **options
                )
                loops[gradient, compile].append(rate[1])
        median = {key: statistics.median(values) for key, values in loops.items()}
        for gradient in estimators:
            eager, compiled = median[gradient, "off"], median[gradient, "on"]
            plain_eager, plain_compiled = median[estimators[0], "off"], median[estimators[0], "on"]
            print(
                f"| {name} | {latent} | {batch} | {objective} K={samples} | {gradient} | "
                f"{eager:,.0f} | {compiled:,.0f} | {eager / plain_eager:.2f} | "
                f"{compiled / plain_compiled:.2f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, help="training examples per run")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--gradients", action="store_true", help="only the gradient estimators' table"
    )
    parser.add_argument(
        "--rows",
        type=int,
        nargs="+",
        choices=range(1, len(GRADIENT_ROWS) + 1),
        default=range(1, len(GRADIENT_ROWS) + 1),
        metavar="N",
        help=f"the gradient table's rows to run (1 to {len(GRADIENT_ROWS)}; default: all)",
    )
    parser.add_argument(
        "--pythae-python",
        default=sys.executable if importlib.util.find_spec("pythae") else None,
        help="a Python interpreter with pythae installed (default: this one, if it has it)",
    )
    args = parser.parse_args()
    quick = args.quick
    examples = args.examples or (10_000 if quick else 20_000)
    repeats = args.repeats or (2 if quick else 3)
    data = mnist_or_synthetic(examples)
    device = torch.device(args.device)
    peak = matmul_peak(device)
    print(
        f"{describe(device)}, {data.name}, "
        f"{examples} training examples per run, median of {repeats}; matmul peak {peak:.0f} "
        "GFLOP/s"
    )
    if args.gradients:
        gradient_rows(data, repeats, device, list(args.rows))
        return
    if args.pythae_python is None:
        print("pythae: not installed here (pip install pythae, or pass --pythae-python)")
    print(
        "| architecture | batch | bare ex/s | peer ex/s (with its test pass) | pythae ex/s | "
        "vaekit eager ex/s (loop only) | vaekit compiled ex/s (loop only) | compile start-up s | "
        "eager/bare (loop) | "
        "compiled/bare (loop) | compiled/peer | compiled/pythae | compiled GFLOP/s (% of peak) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    configs = (
        [("784-400-20 relu", 128)]
        if quick
        else [(name, batch) for name in ARCHITECTURES for batch in (20, 128, 512)]
    )
    with tempfile.TemporaryDirectory() as tmp:  # the data, as .npy files, for pythae_rate.py
        data_dir = Path(tmp)
        np.save(data_dir / "train.npy", data.train_x.numpy())
        np.save(data_dir / "test.npy", data.test_x.numpy())
        for name, batch in configs:
            print(
                table_row(data, name, batch, repeats, peak, args.pythae_python, data_dir, device),
                flush=True,
            )
    gradient_rows(data, repeats, device, list(args.rows))


if __name__ == "__main__":
    main()
