"""What each performance option buys: vaekit's training loop with one option changed, against
the default, measured alternately in one process (medians; ratios > 1 are faster).

Options: threads (1 vs all, on a quiet machine and with another job on one core), Adam
implementation (fused vs foreach vs for-loop),
``torch.compile`` of the training objective, float32 matmul precision, bf16 autocast, batch
size, and channels-last memory format for the conv networks. Every rate is the second epoch's
(the first absorbs one-off costs such as compilation).

    python benchmarks/options.py            # 20,000 examples per epoch, 3 repeats
    python benchmarks/options.py --quick    # 4,000 examples, 1 repeat, < 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import mnist_or_synthetic

import vaekit
from vaekit.data import Batch
from vaekit.training.config import TrainConfig
from vaekit.training.trainer import Trainer

Setup = Callable[[Trainer], None]


@contextlib.contextmanager
def setting(
    get: Callable[[], object], set_to: Callable[[Any], None], value: object
) -> Iterator[None]:
    """A torch global set to ``value`` for the block, then restored."""
    before = get()
    set_to(value)
    try:
        yield
    finally:
        set_to(before)


@contextlib.contextmanager
def one_core_busy() -> Iterator[None]:
    """Another job spinning on one core (a busy-loop process) for the block."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let it take its core
        yield
    finally:
        spinner.kill()
        spinner.wait()


def adam(**kwargs: bool) -> Setup:
    def setup(trainer: Trainer) -> None:
        config = trainer.config
        trainer.optimizer = torch.optim.Adam(
            trainer.model.parameters(), lr=config.lr, eps=config.adam_eps, **kwargs
        )

    return setup


def channels_last(trainer: Trainer) -> None:
    trainer.model.to(memory_format=torch.channels_last)
    train = trainer.train
    trainer.train = Batch(train.x.contiguous(memory_format=torch.channels_last), train.y)


def loop_rate(
    data: vaekit.Dataset,
    model_options: dict,
    batch: int,
    precision: str = "fp32",
    setup: Setup | None = None,
    compile: str = "off",
) -> float:
    """Examples/s of the second epoch of ``vaekit train``'s loop (no run directory)."""
    torch.manual_seed(0)
    model = vaekit.VAE((1, 28, 28), **model_options)
    config = TrainConfig(epochs=2, batch_size=batch, precision=precision, compile=compile)
    trainer = Trainer(model, data, config, None, progress=False)
    if setup is not None:
        setup(trainer)
    return trainer.run()[-1]["examples_per_s"]


MLP = {"latent_dim": 20, "hidden": [400]}
CONV = {"latent_dim": 20, "hidden": [256], "network": "conv"}


def cases() -> list[tuple[str, dict, int, dict]]:
    """(option, model, batch, changes to loop_rate's arguments or a context manager)."""
    return [
        (
            "1 thread instead of 2",
            MLP,
            20,
            {"context": lambda: setting(torch.get_num_threads, torch.set_num_threads, 1)},
        ),
        (
            "1 thread instead of 2",
            MLP,
            128,
            {"context": lambda: setting(torch.get_num_threads, torch.set_num_threads, 1)},
        ),
        *[
            (
                "one core busy: 1 thread instead of 2",
                MLP,
                batch,
                {
                    "busy": True,
                    "context": lambda: setting(torch.get_num_threads, torch.set_num_threads, 1),
                },
            )
            for batch in (20, 128)
        ],
        ("Adam foreach instead of fused", MLP, 128, {"setup": adam(foreach=True)}),
        ("Adam for-loop instead of fused", MLP, 128, {"setup": adam(foreach=False)}),
        ("torch.compile of the objective", MLP, 20, {"compile": "on"}),
        ("torch.compile of the objective", MLP, 128, {"compile": "on"}),
        (
            "float32 matmul precision medium",
            MLP,
            128,
            {
                "context": lambda: setting(
                    torch.get_float32_matmul_precision, torch.set_float32_matmul_precision, "medium"
                )
            },
        ),
        ("bf16 autocast", MLP, 128, {"precision": "bf16"}),
        ("batch 512 instead of 128", MLP, 128, {"batch": 512}),
        ("conv: channels-last", CONV, 128, {"setup": channels_last}),
        ("conv: bf16 autocast", CONV, 128, {"precision": "bf16"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="the cases whose name contains this text")
    args = parser.parse_args()
    examples, repeats = (4_000, 1) if args.quick else (20_000, 3)
    data = mnist_or_synthetic(examples)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {data.name}, "
        f"{examples} examples per epoch, median of {repeats}"
    )
    print("| option | network | batch | default ex/s | with the option ex/s | ratio |")
    print("|---|---|---|---|---|---|")
    for name, model_options, batch, change in cases():
        if args.only not in name:
            continue
        change = dict(change)
        context = change.pop("context", contextlib.nullcontext)
        load = one_core_busy if change.pop("busy", False) else contextlib.nullcontext
        base, changed = [], []
        for _ in range(repeats):
            with load():
                base.append(loop_rate(data, model_options, batch))
                arguments = {"batch": batch, **change}
                with context():
                    changed.append(loop_rate(data, model_options, **arguments))
        default, option = statistics.median(base), statistics.median(changed)
        network = model_options.get("network", "mlp")
        print(
            f"| {name} | {network} 784-{model_options['hidden'][0]}-20 | {batch} | "
            f"{default:,.0f} | {option:,.0f} | {option / default:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
