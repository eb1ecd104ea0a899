"""The training loop: stochastic gradient ascent on the mean (β-weighted) ELBO.

Data stay in memory as tensors and batches are taken by indexing a shuffled permutation; the
loop does not synchronise with the device every step (losses are accumulated on the device and
checked for NaN/Inf every ``CHECK_EVERY`` steps and at the end of each epoch).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit.config import ModelConfig, TrainConfig
from vaekit.data.dataset import Dataset, binarize, fixed_binarization
from vaekit.errors import ConfigError, DataError, TrainingDiverged
from vaekit.evaluation.statistics import elbo_summary, per_example_elbo
from vaekit.model.vae import VAE
from vaekit.nets.factory import set_output_bias
from vaekit.objectives.elbo import elbo
from vaekit.objectives.importance import iwae_terms
from vaekit.training import checkpoint as ckpt
from vaekit.training.io import atomic_write_bytes, run_lock
from vaekit.training.schedule import kl_weight, learning_rate
from vaekit.visuals.grids import save_reconstructions, save_samples

CHECK_EVERY = 50
"""Steps between NaN/Inf checks and progress-bar updates (each is one host synchronisation)."""
FIGURE_INTERVAL_S = 60.0
TERMS = ("elbo", "reconstruction", "rate")


def check_data(config: ModelConfig, data: Dataset, train: TrainConfig) -> TrainConfig:
    """Refuse data the model cannot honestly fit; return ``train`` with ``binarize`` resolved."""
    if data.shape != tuple(config.input_shape):
        raise ConfigError(
            f"the data's examples have shape {data.shape} but the model expects "
            f"{tuple(config.input_shape)}"
        )
    binarization = train.binarize or ("dynamic" if config.likelihood == "bernoulli" else "none")
    if config.likelihood == "bernoulli":
        if not data.in_unit_interval:
            raise DataError(
                f"{data.name}: values outside [0, 1] cannot have a Bernoulli likelihood; use "
                "--likelihood gaussian"
            )
        if binarization == "none" and not data.is_binary:
            raise DataError(
                f"{data.name}: grey-level data with a Bernoulli likelihood would not give a "
                "log-likelihood of the data; use --binarize dynamic or --likelihood gaussian"
            )
    elif binarization == "dynamic":
        raise ConfigError("--binarize dynamic goes with --likelihood bernoulli only")
    if train.objective == "iwae" and (train.beta != 1 or train.warmup_epochs):
        raise ConfigError("the IWAE objective is a bound on log p(x): use --beta 1, no warm-up")
    if train.output_bias and (config.network != "mlp" or config.likelihood != "bernoulli"):
        raise ConfigError("--output-bias needs an MLP decoder and a Bernoulli likelihood")
    return replace(train, binarize=binarization)


def make_optimizer(model: torch.nn.Module, lr: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch supports it (it is faster than
    the per-parameter loop and gives the same update up to float rounding)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, eps=eps, foreach=True)


class Trainer:
    """One run: a model, its data, its configuration and (optionally) its run directory."""

    def __init__(
        self,
        model: VAE,
        data: Dataset,
        config: TrainConfig,
        run_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        self.config = check_data(model.config, data, config)
        self.model = model
        self.data = data
        self.run_dir = run_dir
        self.progress = progress
        self.optimizer = make_optimizer(model, self.config.lr, self.config.adam_eps)
        self.data_generator = torch.Generator().manual_seed(self.config.seed)
        self.dynamic = self.config.binarize == "dynamic"
        self.test_x = fixed_binarization(data.test_x) if self.dynamic else data.test_x
        self.epoch = 0
        self.global_step = 0
        self.elapsed_s = 0.0
        self.history: list[dict[str, Any]] = []
        if self.config.output_bias:
            set_output_bias(model.decoder, data.train_x)
        torch.manual_seed(self.config.seed)

    # ---------------------------------------------------------------- persistence
    def restore(self) -> None:
        """Continue from ``run_dir``'s checkpoint: weights, optimizer, RNG states, metrics."""
        assert self.run_dir is not None
        state, rng = ckpt.load_checkpoint(self.run_dir, self.model, self.optimizer)
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.elapsed_s = float(state["elapsed_s"])
        torch.set_rng_state(rng["torch"])
        self.data_generator.set_state(rng["data"])
        metrics = self.run_dir / ckpt.METRICS
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        self.history = [r for r in map(json.loads, lines) if r["epoch"] <= self.epoch]
        self._write_metrics()

    def _write_metrics(self) -> None:
        assert self.run_dir is not None
        text = "".join(json.dumps(record) + "\n" for record in self.history)
        atomic_write_bytes(self.run_dir / ckpt.METRICS, text.encode())

    def _checkpoint(self) -> None:
        assert self.run_dir is not None
        state = {"epoch": self.epoch, "global_step": self.global_step, "elapsed_s": self.elapsed_s}
        rng = {"torch": torch.get_rng_state(), "data": self.data_generator.get_state()}
        ckpt.save_checkpoint(self.run_dir, self.model, self.optimizer, state, rng)

    def _figures(self) -> None:
        assert self.run_dir is not None
        generator = torch.Generator().manual_seed(0)
        save_samples(self.model, self.run_dir / "samples.png", generator=generator)
        save_reconstructions(self.model, self.test_x[:32], self.run_dir / "reconstructions.png")

    # ---------------------------------------------------------------- training
    def _train_epoch(self, bar: tqdm) -> dict[str, float]:
        config, model, optimizer = self.config, self.model, self.optimizer
        train_x = self.data.train_x
        n, batch = len(train_x), config.batch_size
        steps = math.ceil(n / batch)
        lr = learning_rate(config, self.epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(n, generator=self.data_generator)
        sums = torch.zeros(steps, len(TERMS), dtype=torch.float64, device=train_x.device)
        start, reported = time.perf_counter(), 0
        for step in range(steps):
            x = train_x[order[step * batch : (step + 1) * batch]]
            if self.dynamic:
                x = binarize(x, self.data_generator)
            beta = kl_weight(config, self.global_step, steps)
            if config.objective == "iwae":
                bound, terms = iwae_terms(model, x, config.samples)
                loss = -bound.mean()
            else:
                terms = elbo(model, x, config.samples)
                loss = -terms.objective(beta).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums[step] = torch.stack([t.detach().sum() for t in terms])
            self.global_step += 1
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                self._check_finite(sums[: step + 1])
                means = sums[: step + 1].sum(0) / min(n, (step + 1) * batch)
                bar.update(step + 1 - reported)
                reported = step + 1
                bar.set_postfix_str(
                    f"epoch {self.epoch + 1}/{config.epochs} ELBO {means[0]:.2f} "
                    f"recon {means[1]:.2f} KL {means[2]:.2f}",
                    refresh=False,
                )
        seconds = time.perf_counter() - start
        means = (sums.sum(0) / n).tolist()
        record = {f"train_{name}": value for name, value in zip(TERMS, means, strict=True)}
        record.update(lr=lr, beta=beta, train_time_s=seconds, examples_per_s=n / seconds)
        return record

    def _check_finite(self, sums: torch.Tensor) -> None:
        finite = torch.isfinite(sums)
        if bool(finite.all()):
            return
        step = int((~finite).any(1).nonzero()[0])
        bad = [
            name for name, ok in zip(TERMS[1:], finite[step, 1:].tolist(), strict=True) if not ok
        ]
        value = sums[step, TERMS.index(bad[0])].item() if bad else math.nan
        where = f"; the last good checkpoint is in {self.run_dir}" if self.run_dir else ""
        raise TrainingDiverged(
            f"training diverged: the {'/'.join(bad) or 'ELBO'} term became {value} at epoch "
            f"{self.epoch + 1}, step {step + 1}{where}; lower --lr or add --warmup-epochs"
        )

    def _evaluate(self) -> dict[str, float]:
        summary = elbo_summary(
            per_example_elbo(self.model, self.test_x, self.config.eval_batch_size)
        )
        record = {f"test_{name}": mean.value for name, mean in summary.items()}
        record["test_elbo_stderr"] = summary["elbo"].stderr
        return record

    def run(self) -> list[dict[str, Any]]:
        """Train until ``config.epochs``; return the per-epoch metrics."""
        config = self.config
        steps = math.ceil(len(self.data.train_x) / config.batch_size)
        log_every = max(1, config.epochs // 10)
        last_figures = time.perf_counter()
        with tqdm(
            total=config.epochs * steps,
            initial=self.epoch * steps,
            disable=not self.progress or None,
            unit="batch",
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            while self.epoch < config.epochs:
                record = self._train_epoch(bar)
                record.update(self._evaluate())
                self.epoch += 1
                self.elapsed_s += record["train_time_s"]
                record = {"epoch": self.epoch, **record, "elapsed_s": self.elapsed_s}
                self.history.append(record)
                if self.progress and (self.epoch % log_every == 0 or self.epoch == config.epochs):
                    bar.write(format_record(record))
                if self.run_dir is not None:
                    self._write_metrics()
                    if self.epoch % config.checkpoint_every == 0 or self.epoch == config.epochs:
                        self._checkpoint()
                    if time.perf_counter() - last_figures > FIGURE_INTERVAL_S:
                        self._figures()
                        last_figures = time.perf_counter()
        if self.run_dir is not None:
            self._figures()
        self.model.eval()
        return self.history


def format_record(record: dict[str, Any]) -> str:
    """One line per epoch: terms in nats per example (summed over dimensions)."""
    return (
        f"epoch {record['epoch']:>4}  train ELBO {record['train_elbo']:9.2f}  "
        f"held-out ELBO {record['test_elbo']:9.2f} (recon {record['test_reconstruction']:9.2f}, "
        f"KL {record['test_rate']:7.2f})  {record['examples_per_s']:8.0f} ex/s"
    )


def new_run_dir(run_dir: Path) -> Path:
    """Create ``run_dir`` for a new run, refusing to overwrite an existing run."""
    if (run_dir / ckpt.CONFIG).exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
            "another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def fit(
    model: VAE,
    data: Dataset,
    config: TrainConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    progress: bool = True,
    **options: Any,
) -> list[dict[str, Any]]:
    """Train ``model`` on ``data`` by maximising the ELBO; return per-epoch metrics.

    ``options`` override fields of ``config`` (e.g. ``epochs=10, lr=1e-3``). With ``run_dir``
    the run writes config, checkpoints, metrics and figures there (resumable with
    :func:`resume`); without it, nothing is written.
    """
    config = replace(config or TrainConfig(), **options)
    if run_dir is None:
        return Trainer(model, data, config, None, progress).run()
    run_dir = new_run_dir(Path(run_dir))
    with run_lock(run_dir):
        trainer = Trainer(model, data, config, run_dir, progress)
        ckpt.write_config(run_dir, model, trainer.config, data.summary())
        return trainer.run()


def resume(
    run_dir: str | Path,
    epochs: int | None = None,
    *,
    data: Dataset | None = None,
    progress: bool = True,
    verify: bool = True,
) -> tuple[VAE, list[dict[str, Any]]]:
    """Continue the run in ``run_dir`` from its last checkpoint (to ``epochs`` in all, if
    given); return the model and all metrics. The data are reloaded from the run's config
    unless passed (needed for data that are not a file or standard dataset)."""
    from vaekit.data import load_dataset

    run_dir = Path(run_dir)
    model_config, config, raw = ckpt.read_config(run_dir)
    if raw.get("custom_networks"):
        raise ConfigError(f"{run_dir}: resume a run with custom networks from Python (vaekit.fit)")
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, config.image_size, verify)
    with run_lock(run_dir):
        model = VAE.from_config(model_config)
        trainer = Trainer(model, data, config, run_dir, progress)
        trainer.restore()
        ckpt.write_config(run_dir, model, trainer.config, data.summary())
        return model, trainer.run()
