"""The training loop: stochastic gradient ascent on the mean (β-weighted) ELBO.

Data stay in memory as tensors and batches are taken by indexing a shuffled permutation; the
loop does not synchronise with the device every step (losses are accumulated on the device and
checked for NaN/Inf every ``CHECK_EVERY`` steps and at the end of each epoch).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vaekit.config import TrainConfig
from vaekit.data.dataset import Dataset, binarize, fixed_binarization
from vaekit.errors import CheckpointError, ConfigError, DataError, TrainingDiverged, VaekitError
from vaekit.evaluation.statistics import elbo_summary, per_example_elbo
from vaekit.model.vae import VAE
from vaekit.nets.factory import set_output_bias
from vaekit.objectives.elbo import elbo
from vaekit.objectives.importance import iwae_terms
from vaekit.training import checkpoint as ckpt
from vaekit.training.distributed import (
    all_reduce_sum,
    barrier,
    broadcast,
    rank_and_size,
    resolve_device,
)
from vaekit.training.io import atomic_write_bytes, run_lock
from vaekit.training.schedule import kl_weight, learning_rate
from vaekit.visuals.grids import save_reconstructions, save_samples

CHECK_EVERY = 50
"""Steps between NaN/Inf checks and progress-bar updates (each is one host synchronisation)."""
COMPILE_MIN_STEPS = 50_000
"""``compile="auto"`` compiles a run with at least this many optimizer steps ahead: on 2 CPU
cores the compiled step is ~10% faster (from -4% to +22% over train_throughput.py's six
settings; 0.15-0.3 ms a step at batch 20-128), which repays the ~7 s cold start-up after
25,000-50,000 steps (benchmarks/results/train-throughput.log, options.log)."""
FIGURE_INTERVAL_S = 60.0
MAX_ROLLBACKS = 3
TERMS = ("elbo", "reconstruction", "rate")


def check_data(model: VAE, data: Dataset, train: TrainConfig) -> TrainConfig:
    """Refuse data the model cannot honestly fit; return ``train`` with ``binarize`` resolved."""
    config = model.config
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
    else:
        try:
            for x in (data.train_x, data.test_x):
                model.likelihood.check(x)
        except DataError as err:
            raise DataError(f"{data.name}: {err}") from None
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
        self.config = check_data(model, data, config)
        self.device = resolve_device(self.config.device)
        if self.config.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("--precision fp16 needs CUDA; use bf16 or fp32 here")
        self.rank, self.world = rank_and_size()
        if self.config.batch_size < self.world:
            raise ConfigError(f"--batch-size (global) must be at least the {self.world} ranks")
        self.model = model.to(self.device)
        self.data = data
        self.run_dir = run_dir
        self.writes = run_dir is not None and self.rank == 0
        self.progress = progress and self.rank == 0
        self.optimizer = make_optimizer(model, self.config.lr, self.config.adam_eps)
        self.data_device = self.device if self.config.data_on_device else torch.device("cpu")
        self.train_x = data.train_x.to(self.data_device)
        self.data_generator = torch.Generator(self.data_device).manual_seed(self.config.seed)
        self.noise_generator = torch.Generator(self.device).manual_seed(self.config.seed + 1)
        self.dynamic = self.config.binarize == "dynamic"
        test_x = fixed_binarization(data.test_x) if self.dynamic else data.test_x
        self.test_x = test_x.to(self.device)
        self.step_module: torch.nn.Module = _Objective(model, self.config)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)
        self.eager_module = self.step_module
        precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            contextlib.nullcontext
            if precision is None
            else lambda: torch.autocast(self.device.type, precision)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.config.precision == "fp16" else None
        self.epoch = 0
        self.global_step = 0
        self.elapsed_s = 0.0
        self.history: list[dict[str, Any]] = []
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.partial: EpochState | None = None
        self.stop_requested = False
        self.writer: Any = None
        if self.config.tensorboard:
            if run_dir is None:
                raise ConfigError("--tensorboard writes into the run directory: give one")
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package: pip install tensorboard"
                ) from None
        if self.config.output_bias:
            set_output_bias(model.decoder, data.train_x)
        torch.manual_seed(self.config.seed)

    # ---------------------------------------------------------------- persistence
    def restore(self) -> None:
        """Continue from ``run_dir``'s checkpoint: weights, optimizer, RNG states, metrics, and
        the position inside an epoch when the run was stopped there (Ctrl-C)."""
        assert self.run_dir is not None
        state, tensors = ckpt.load_checkpoint(self.run_dir, self.model, self.optimizer)
        try:
            self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
            self.elapsed_s = float(state["elapsed_s"])
            self.lr_scale = float(state.get("lr_scale", 1.0))
            self._set_rng(tensors)
            if "epoch.order" in tensors:
                self.partial = EpochState(
                    tensors["epoch.order"],
                    tensors["epoch.sums"],
                    int(state["step"]),
                    float(state["epoch_time_s"]),
                )
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{self.run_dir}: incomplete training state ({err})") from err
        self.history = [r for r in ckpt.read_metrics(self.run_dir) if r["epoch"] <= self.epoch]
        self._write_metrics()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed write (disk full, permissions) into one clear error; the atomic
        writes leave every previous file intact."""
        try:
            yield
        except OSError as err:
            raise CheckpointError(
                f"could not write to {self.run_dir} ({err.strerror or err}); the previous "
                "checkpoint is intact: free space, then continue with --resume"
            ) from err

    def _write_metrics(self) -> None:
        assert self.run_dir is not None
        text = "".join(json.dumps(record) + "\n" for record in self.history)
        with self._writing():
            atomic_write_bytes(self.run_dir / ckpt.METRICS, text.encode())

    def _set_rng(self, tensors: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(tensors["rng.torch"])
        self.data_generator.set_state(tensors["rng.data"])
        self.noise_generator.set_state(tensors["rng.noise"])

    def _snapshot(self) -> dict[str, Any]:
        """Everything a checkpoint holds, in memory (for rollback and for writing)."""
        return {
            "state": {
                "epoch": self.epoch,
                "global_step": self.global_step,
                "elapsed_s": self.elapsed_s,
                "lr_scale": self.lr_scale,
            },
            "tensors": {
                "rng.torch": torch.get_rng_state(),
                "rng.data": self.data_generator.get_state(),
                "rng.noise": self.noise_generator.get_state(),
            },
        }

    def _checkpoint(self, partial: EpochState | None = None) -> None:
        assert self.run_dir is not None
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged(
                f"the weights became NaN/Inf in epoch {self.epoch}; not saved: the last good "
                f"checkpoint in {self.run_dir} is kept; lower --lr or use --on-nan rollback"
            )
        snapshot = self._snapshot()
        if partial is not None:
            snapshot["state"].update(step=partial.step, epoch_time_s=partial.seconds)
            snapshot["tensors"].update({"epoch.order": partial.order, "epoch.sums": partial.sums})
        with self._writing():
            ckpt.save_checkpoint(
                self.run_dir, self.model, self.optimizer, snapshot["state"], snapshot["tensors"]
            )

    def _figures(self) -> None:
        assert self.run_dir is not None
        generator = torch.Generator().manual_seed(0)
        with self._writing():
            save_samples(self.model, self.run_dir / "samples.png", generator=generator)
            save_reconstructions(self.model, self.test_x[:32], self.run_dir / "reconstructions.png")

    # ---------------------------------------------------------------- training
    def _compile_if_worth_it(self, steps_ahead: int) -> None:
        """Compile the objective if ``config.compile`` asks for it, or (``auto``) if
        ``steps_ahead`` repay the start-up on a CPU or CUDA device in a single process (with
        DistributedDataParallel, compiling is left to ``on``: it is not measured here)."""
        setting = self.config.compile
        if self.step_module is not self.eager_module:
            return  # compiled already (run() called again)
        if setting == "on" or (
            setting == "auto"
            and steps_ahead >= COMPILE_MIN_STEPS
            and self.device.type in ("cpu", "cuda")
            and self.world == 1
        ):
            self.step_module = torch.compile(self.eager_module)

    def _objective(self, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The step module's ``(loss, sums)``; if torch.compile fails (no C++ compiler, no
        Triton, an unsupported operation), ``auto`` carries on without it."""
        try:
            return self.step_module(*args)
        except Exception as err:
            if self.step_module is self.eager_module:
                raise
            # torch.compile has imported torch._dynamo by now (importing it costs ~1 s)
            from torch._dynamo.exc import TorchDynamoException

            if not isinstance(err, TorchDynamoException):
                raise
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            if self.config.compile == "on":
                raise ConfigError(
                    f"torch.compile failed ({reason}); train with --compile off"
                ) from err
            tqdm.write(f"vaekit: torch.compile failed ({reason}); training without it")
            self.step_module = self.eager_module
            return self.step_module(*args)

    def _train_epoch(self, bar: tqdm) -> dict[str, float]:
        config, model, optimizer = self.config, self.model, self.optimizer
        train_x = self.train_x
        n, batch = len(train_x), config.batch_size
        steps = math.ceil(n / batch)
        lr = learning_rate(config, self.epoch) * self.lr_scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        if self.partial is None:
            order = torch.randperm(n, generator=self.data_generator, device=train_x.device)
            sums = torch.zeros(steps, len(TERMS), dtype=torch.float64, device=self.device)
            first, spent = 0, 0.0
        else:
            order, sums = (
                self.partial.order.to(train_x.device),
                self.partial.sums.to(self.device),
            )
            first, spent = self.partial.step, self.partial.seconds
            self.partial = None
        # NaN checks and the progress bar look at the steps since the last check only, so the
        # work per check does not grow with the epoch (``seen``: this rank's examples so far)
        start, checked, seen = time.perf_counter(), first, min(first * batch, n) // self.world
        totals = sums[:first].sum(0)
        beta = kl_weight(config, self.global_step, steps)
        latent = model.latent_dim
        for step in range(first, steps):
            if self.stop_requested:
                raise Interrupted(
                    EpochState(order, sums, step, spent + time.perf_counter() - start)
                )
            # The global batch and its random draws are the same on every rank (shared seeds);
            # each rank takes its share, so N ranks compute what one process would.
            x = train_x[order[step * batch : (step + 1) * batch]]
            if self.dynamic:
                x = binarize(x, self.data_generator)
            noise = torch.randn(
                (config.samples, len(x), latent),
                generator=self.noise_generator,
                device=self.device,
            )
            size = len(x)
            if self.world > 1:
                x, noise = (
                    x.tensor_split(self.world)[self.rank],
                    noise.tensor_split(self.world, dim=1)[self.rank],
                )
            x = x.to(self.device, non_blocking=True)
            beta = kl_weight(config, self.global_step, steps)
            with self.autocast():
                loss, step_sums = self._objective(x, noise, beta, size / self.world)
            optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
                self.scaler.update()
            sums[step] = step_sums
            seen += len(x)
            self.global_step += 1
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                block = sums[checked : step + 1]
                self._check_finite(block, checked)
                totals += block.sum(0)
                means = totals / seen
                bar.update(step + 1 - checked)
                checked = step + 1
                bar.set_postfix_str(
                    f"epoch {self.epoch + 1}/{config.epochs} ELBO {means[0]:.2f} "
                    f"recon {means[1]:.2f} KL {means[2]:.2f}",
                    refresh=False,
                )
        seconds = spent + time.perf_counter() - start
        means = (all_reduce_sum(sums.sum(0)) / n).tolist()
        record = {f"train_{name}": value for name, value in zip(TERMS, means, strict=True)}
        record.update(lr=lr, beta=beta, train_time_s=seconds, examples_per_s=n / seconds)
        return record

    def _check_finite(self, sums: torch.Tensor, first_step: int) -> None:
        """Raise :class:`TrainingDiverged` at the first non-finite row of ``sums`` (the term
        sums of steps ``first_step``, ``first_step + 1``, ...)."""
        finite = torch.isfinite(sums)
        if bool(finite.all()):
            return
        row = int((~finite).any(1).nonzero()[0])
        bad = [name for name, ok in zip(TERMS[1:], finite[row, 1:].tolist(), strict=True) if not ok]
        value = sums[row, TERMS.index(bad[0])].item() if bad else math.nan
        step = first_step + row
        where = f"; the last good checkpoint is in {self.run_dir}" if self.run_dir else ""
        raise TrainingDiverged(
            f"training diverged: the {'/'.join(bad) or 'ELBO'} term became {value} at epoch "
            f"{self.epoch + 1}, step {step + 1}{where}; lower --lr, add --warmup-epochs or use "
            "--on-nan rollback"
        )

    def _evaluate(self) -> dict[str, float]:
        summary = elbo_summary(
            per_example_elbo(self.model, self.test_x, self.config.eval_batch_size)
        )
        record = {f"test_{name}": mean.value for name, mean in summary.items()}
        record["test_elbo_stderr"] = summary["elbo"].stderr
        return record

    def _rollback(self, good: dict[str, Any], error: TrainingDiverged) -> None:
        """Return to the last good epoch end with half the learning rate, or give up."""
        if self.config.on_nan != "rollback" or self.rollbacks >= MAX_ROLLBACKS:
            raise error
        self.rollbacks += 1
        self.model.load_state_dict(good["model"])
        self.optimizer.load_state_dict(good["optimizer"])
        state, tensors = good["state"], good["tensors"]
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.elapsed_s = state["elapsed_s"]
        self.lr_scale = state["lr_scale"] / 2
        self._set_rng(tensors)
        self.partial = None
        tqdm.write(
            f"vaekit: {error}; rolled back to epoch {self.epoch} with learning rate "
            f"x{self.lr_scale:g} ({self.rollbacks}/{MAX_ROLLBACKS})"
        )

    def _good_state(self) -> dict[str, Any]:
        snapshot = self._snapshot()
        snapshot["model"] = copy.deepcopy(self.model.state_dict())
        snapshot["optimizer"] = copy.deepcopy(self.optimizer.state_dict())
        return snapshot

    def run(self) -> list[dict[str, Any]]:
        """Train until ``config.epochs``; return the per-epoch metrics.

        Ctrl-C (SIGINT) finishes the current step, writes a checkpoint that records the
        position inside the epoch, and raises KeyboardInterrupt: ``resume`` then continues
        exactly where it stopped. A second Ctrl-C stops at once (the last checkpoint stays).
        """
        with _stop_on_sigint(self):
            try:
                return self._run()
            except Interrupted as stop:
                if self.writes:
                    self._checkpoint(stop.state)
                raise KeyboardInterrupt from None

    def _run(self) -> list[dict[str, Any]]:
        config = self.config
        steps = math.ceil(len(self.data.train_x) / config.batch_size)
        log_every = max(1, config.epochs // 10)
        last_figures = time.perf_counter()
        good = self._good_state() if config.on_nan == "rollback" else None
        done = self.epoch * steps + (self.partial.step if self.partial else 0)
        self._compile_if_worth_it(config.epochs * steps - done)
        with tqdm(
            total=config.epochs * steps,
            initial=done,
            disable=not self.progress or None,
            unit="batch",
            dynamic_ncols=True,
            leave=False,
        ) as bar:
            while self.epoch < config.epochs:
                try:
                    record = self._train_epoch(bar)
                except TrainingDiverged as error:
                    assert good is not None or config.on_nan == "stop"
                    self._rollback(good, error)  # type: ignore[arg-type]
                    bar.reset(total=config.epochs * steps)
                    bar.update(self.epoch * steps)
                    continue
                record.update(self._evaluate())
                self.epoch += 1
                self.elapsed_s += record["train_time_s"]
                record = {"epoch": self.epoch, **record, "elapsed_s": self.elapsed_s}
                self.history.append(record)
                if self.progress and (self.epoch % log_every == 0 or self.epoch == config.epochs):
                    bar.write(format_record(record))
                if good is not None:
                    good = self._good_state()
                if config.tensorboard and self.writes:
                    self._tensorboard(record)
                if self.writes:
                    self._write_metrics()
                    if self.epoch % config.checkpoint_every == 0 or self.epoch == config.epochs:
                        self._checkpoint()
                    if time.perf_counter() - last_figures > FIGURE_INTERVAL_S:
                        self._figures()
                        last_figures = time.perf_counter()
        if self.writes:
            self._figures()
        self.model.eval()
        return self.history

    def _tensorboard(self, record: dict[str, Any]) -> None:
        """Scalars of this epoch's record and a grid of samples, for TensorBoard."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter  # checked in __init__

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        for key, value in record.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, record["epoch"])
        samples = self.model.sample(16, generator=torch.Generator().manual_seed(0))
        if samples.dim() == 4:
            self.writer.add_images("samples", samples.clamp(0, 1), record["epoch"])
        self.writer.flush()


class _Objective(torch.nn.Module):
    """The training objective as a module, so that DistributedDataParallel can wrap it.

    ``forward(x, noise, beta, share)`` returns ``(loss, sums)``: loss = −Σ objective / share,
    where ``share`` is the global batch divided by the number of ranks (DDP then averages the
    ranks' gradients into the gradient of the global-batch mean), and the detached per-term
    sums of (ELBO, reconstruction, rate) over the local examples.
    """

    def __init__(self, model: VAE, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.objective = config.objective
        self.samples = config.samples

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor, beta: float, share: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.objective == "iwae":
            bound, terms = iwae_terms(self.model, x, self.samples, noise)
            total = bound.sum()
            sums = torch.stack(terms).detach().sum(1, dtype=torch.float64)
        else:
            terms = elbo(self.model, x, self.samples, noise, reduction="sum")
            total = terms.objective(beta)
            sums = torch.stack(terms).detach()
        return -total / share, sums


@dataclass
class EpochState:
    """Where a run stopped inside an epoch: the epoch's order of examples, the per-step term
    sums so far, the next step, and the training seconds spent in the epoch."""

    order: torch.Tensor
    sums: torch.Tensor
    step: int
    seconds: float


class Interrupted(Exception):
    """Raised at a step boundary after Ctrl-C, carrying the position inside the epoch."""

    def __init__(self, state: EpochState) -> None:
        super().__init__("interrupted")
        self.state = state


@contextlib.contextmanager
def _stop_on_sigint(trainer: Trainer) -> Iterator[None]:
    """While training, the first SIGINT asks the loop to stop at the next step boundary; a
    second one interrupts at once. (Only the main thread can own signal handlers.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: object) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
    run_dir = Path(run_dir)
    trainer = Trainer(model, data, config, run_dir, progress)  # checks first: no empty run dir
    _on_rank_zero(lambda: new_run_dir(run_dir))
    with _lock_on_rank_zero(run_dir):
        if trainer.writes:
            ckpt.write_config(run_dir, model, trainer.config, data.summary())
        history = trainer.run()
    barrier()
    return history


def _on_rank_zero(action: Callable[[], object]) -> None:
    """Run ``action`` on rank 0; if it fails, every rank raises the same error."""
    error = None
    if rank_and_size()[0] == 0:
        try:
            action()
        except VaekitError as err:
            error = err
    error = broadcast(error)
    if error is not None:
        raise error


def _lock_on_rank_zero(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    return run_lock(run_dir) if rank_and_size()[0] == 0 else contextlib.nullcontext()


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
    with _lock_on_rank_zero(run_dir):
        model = VAE.from_config(model_config)
        trainer = Trainer(model, data, config, run_dir, progress)
        trainer.restore()
        if epochs is not None and epochs < trainer.epoch:
            raise ConfigError(
                f"{run_dir} has trained {trainer.epoch} epochs; --epochs is the total to reach, "
                f"so give more than {trainer.epoch}"
            )
        if trainer.writes:
            ckpt.write_config(run_dir, model, trainer.config, data.summary())
        history = trainer.run()
    barrier()
    return model, history
