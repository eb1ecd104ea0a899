"""The training loop: stochastic gradient ascent on the mean (β-weighted) objective.

Data stay in memory as tensors and batches are taken by indexing a shuffled permutation; the
loop does not synchronise with the device every step (losses are accumulated on the device and
checked for NaN/Inf every ``CHECK_EVERY`` steps and at the end of each epoch). The loop knows
the model only through its contract: it draws noise ``(S, B, model.noise_dim)``, carries
labels when ``model.uses_labels``, and lets the likelihood say what a training batch is.
The resumable state is :mod:`.state`, interrupts :mod:`.interrupts`, the files
:mod:`.run_dir`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vaekit.console import say, step_bar
from vaekit.data.batch import Batch
from vaekit.data.dataset import Dataset
from vaekit.data.labelled import ONCE_EACH, LabelledWeights, semi_supervised_set
from vaekit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    TrainingDiverged,
    VaekitError,
    first_line,
)
from vaekit.evaluation.labels import classification_error
from vaekit.evaluation.layers import describe_layers, layer_record
from vaekit.evaluation.statistics import elbo_summary
from vaekit.model import build_model
from vaekit.model.likelihoods import BatchTransform
from vaekit.nets.factory import set_output_bias
from vaekit.objectives.elbo import elbo_in_batches
from vaekit.objectives.training import OBJECTIVES
from vaekit.training.config import TrainConfig
from vaekit.training.distributed import (
    all_reduce_sum,
    barrier,
    broadcast,
    rank_and_size,
    resolve_device,
)
from vaekit.training.interrupts import Stopped, StopRequest, stop_on_signals
from vaekit.training.run_dir import RunDirectory
from vaekit.training.schedule import kl_weight, layer_kl_weights, learning_rate
from vaekit.training.state import EpochState, Interrupted, TrainingState
from vaekit.training.tracking import make_trackers
from vaekit.visuals.grids import reconstructions_png, samples_png

CHECK_EVERY = 50
"""Steps between NaN/Inf checks and progress-bar updates (each is one host synchronisation)."""
COMPILE_MIN_STEPS = 50_000
"""``compile="auto"`` compiles a run with at least this many optimizer steps ahead: on 2 CPU
cores the compiled step is ~10% faster (from -4% to +22% over train_throughput.py's six
settings; 0.15-0.3 ms a step at batch 20-128), which repays the ~7 s cold start-up after
25,000-50,000 steps (benchmarks/results/train-throughput.log, options.log)."""
ISOLATES_RECOMPILES = "isolate_recompiles" in inspect.signature(torch.compile).parameters
"""Whether this torch can give each ``torch.compile`` call a budget of compiled versions of its
own (torch 2.13 can). Every trainer compiles the same code, the step's ``forward``, and torch
keeps 8 compiled versions of a code object per process by default. A run makes 2 or 3 (β = 0
during warm-up, then any β; an epoch's last, smaller batch), so without a budget of its own the
third or fourth model that a process trained ran eager, with no more than torch's warning. The
last row of ``train_throughput.py --gradients`` (its 8th configuration) ran so
(benchmarks/results/gradients-before-isolate-recompiles.log)."""
FIGURE_INTERVAL_S = 60.0
# what a tracker keeps of a finished run: its figures and its model folder
TRACKED_FILES = ("samples.png", "reconstructions.png", "config.json", "model.safetensors")
MAX_ROLLBACKS = 3
TERMS = ("elbo", "reconstruction", "rate")


def check_data(
    model: torch.nn.Module, data: Dataset, train: TrainConfig
) -> tuple[TrainConfig, BatchTransform | None]:
    """Refuse data the model cannot honestly fit (the likelihood says what it can); return
    ``train`` with ``binarize`` resolved, and what each training batch goes through."""
    if data.shape != tuple(model.input_shape):
        raise ConfigError(
            f"the data's examples have shape {data.shape} but the model expects "
            f"{tuple(model.input_shape)}"
        )
    for split, x in (("training", data.train_x), ("test", data.test_x)):
        if len(x) == 0:
            raise DataError(f"{data.name}: the {split} split is empty; give it examples")
    if model.uses_labels and data.train_y is None:
        raise ConfigError(f"{data.name} has no labels, and this model needs them")
    _check_semi_supervised(model, train)
    _check_layer_warmup(model, train)
    binarization, transform = model.likelihood.training_transform(data, train.binarize)
    return replace(train, binarize=binarization), transform


def _check_semi_supervised(model: torch.nn.Module, train: TrainConfig) -> None:
    """Refuse hidden labels for a model that cannot infer them, and what M2 does not take."""
    if not model.infers_labels:
        if train.labelled is not None:
            raise ConfigError(
                "--labelled trains a semi-supervised model: add --model semi-supervised"
            )
        return
    if train.objective != "elbo" or train.free_bits:
        raise ConfigError("a semi-supervised model trains with --objective elbo, without free bits")


def _check_layer_warmup(model: torch.nn.Module, train: TrainConfig) -> None:
    """A warm-up per layer needs a hierarchy, and one entry for each of its layers."""
    layers, given = len(model.layer_sizes), len(train.layer_warmup_epochs)
    if given and layers == 1:
        raise ConfigError(
            "--layer-warmup-epochs is for a hierarchy of latent layers: use --warmup-epochs"
        )
    if given and given != layers:
        raise ConfigError(
            f"--layer-warmup-epochs has {given} {'entry' if given == 1 else 'entries'} for "
            f"{layers} latent layers: give one per layer, bottom to top"
        )


def make_optimizer(
    params: Iterable[torch.Tensor], lr: float, eps: float = 1e-8
) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step where this torch supports it (it is faster than
    the per-parameter loop and gives the same update up to float rounding)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=True)


class Trainer:
    """One run: a model, its data, its configuration and (optionally) its run directory."""

    def __init__(
        self,
        model: torch.nn.Module,
        data: Dataset,
        config: TrainConfig,
        run_dir: Path | RunDirectory | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.batch_transform = check_data(model, data, config)
        self.device = resolve_device(self.config.device)
        if self.config.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("--precision fp16 needs CUDA; use bf16 or fp32 here")
        self.rank, self.world = rank_and_size()
        if self.config.batch_size < self.world:
            raise ConfigError(f"--batch-size (global) must be at least the {self.world} ranks")
        if self.config.gradient != "reparam" and not model.posterior.has_stopped_log_prob:
            raise ConfigError(
                f"--gradient {self.config.gradient} needs log q at stopped parameters, which the "
                f"{model.config.posterior.name} posterior does not have: use --gradient reparam"
            )
        self.model = model.to(self.device)
        self.run_dir = None if run_dir is None else RunDirectory(run_dir)
        run_path = None if self.run_dir is None else self.run_dir.path
        self.trackers = make_trackers(self.config, run_path)
        self.writes = self.run_dir is not None and self.rank == 0
        self.progress = progress and self.rank == 0
        self.optimizer = make_optimizer(model.parameters(), self.config.lr, self.config.adam_eps)
        self._place_data(model, data)
        self._make_step(model)
        self.history: list[dict[str, Any]] = []
        self.rollbacks = 0
        self.until_step: int | None = None
        self.stop = StopRequest()
        if self.config.output_bias:  # refuses other likelihoods and decoders, before any write
            set_output_bias(model.decoder, model.likelihood.initial_output_bias(data.train_x))
        torch.manual_seed(self.config.seed)

    def _place_data(self, model: torch.nn.Module, data: Dataset) -> None:
        """The training data where the loop indexes them (labels only for a model that reads
        them), the test set as evaluated, and the generators of the draws."""
        data_device = self.device if self.config.data_on_device else torch.device("cpu")
        labels = model.uses_labels
        self.train = Batch(
            data.train_x.to(data_device), data.train_y.to(data_device) if labels else None
        )
        # codes drawn afresh each batch from N(train.x, train_scale²) (None: the values as given)
        self.train_scale = (
            data.train_scale.to(data_device)
            if self.config.draw_codes and data.train_scale is not None
            else None
        )
        # the rows an epoch goes through (None: each example once)
        self.rows: torch.Tensor | None = None
        self.labelled = ONCE_EACH  # of a labelled row in the objective
        if model.infers_labels:
            self.train, self.rows, self.labelled = semi_supervised_set(
                self.train, self.config.labelled, model.classes, self.config.seed
            )
        test_x = model.likelihood.evaluation_examples(data.test_x)
        self.test = Batch(test_x, data.test_y if labels else None).to(self.device)
        self.state = TrainingState(
            torch.Generator(data_device).manual_seed(self.config.seed),
            torch.Generator(self.device).manual_seed(self.config.seed + 1),
        )

    @property
    def epoch_rows(self) -> int:
        """The rows an epoch goes through: its examples, and in a semi-supervised run the
        labelled ones' repeats."""
        return len(self.train.x) if self.rows is None else len(self.rows)

    @property
    def rows_per_example(self) -> float:
        """Rows an epoch goes through per training example (1 unless a semi-supervised run
        repeats its labelled ones). The objective's sums weigh a repeated row so that an
        epoch's sums count each example once (see :class:`LabelledWeights`): the progress
        bar's means per example divide them by the rows seen over this."""
        return self.epoch_rows / len(self.train.x)

    def _make_step(self, model: torch.nn.Module) -> None:
        """The step module (DDP-wrapped across ranks), autocast and the gradient scaler."""
        self.step_module: torch.nn.Module = _Objective(model, self.config, self.labelled)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = DistributedDataParallel(self.step_module, device_ids=ids)
        self.eager_module = self.step_module
        precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            contextlib.nullcontext
            if precision is None
            else functools.partial(torch.autocast, self.device.type, precision)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.config.precision == "fp16" else None
        self.clipped = torch.zeros((), dtype=torch.int64, device=self.device)

    # ---------------------------------------------------------------- persistence
    def restore(self) -> None:
        """Continue from the run's checkpoint: weights, optimizer, RNG states, metrics, and
        the position inside an epoch when the run was stopped there (Ctrl-C)."""
        assert self.run_dir is not None
        state, tensors = self.run_dir.load_checkpoint(self.model, self.optimizer)
        moved = self.state.restore(state, tensors, self.run_dir)
        self.state.check_position(self.epoch_rows, self.config.batch_size, self.run_dir)
        if moved and self.rank == 0:
            devices = {getattr(self.state, name).device.type for name in moved}
            say(
                f"vaekit: note: {self.run_dir} saved the random state of its "
                f"{' and '.join(moved)} draws on another type of device than "
                f"{'/'.join(sorted(devices))}: they go on from a seed derived from it, so the "
                "run continues, though not bit for bit as on its first device"
            )
        self.history = [r for r in self.run_dir.read_metrics() if r["epoch"] <= self.state.epoch]
        if self.writes:
            with self._writing():
                self.run_dir.write_metrics(self.history)
                self.run_dir.save_weights(self.model)  # as the checkpoint: a kill may have
                # stopped the last write of model.safetensors

    def continue_from_checkpoint(self, summary: dict[str, Any]) -> None:
        """Take up the run where its checkpoint left it (if it has one: else from epoch 0),
        refuse a total of epochs below those trained, and record the configuration (its
        ``epochs`` may be new) with the data's ``summary``."""
        assert self.run_dir is not None
        if self.run_dir.has_checkpoint():
            self.restore()
        if self.config.epochs < self.state.epoch:
            raise ConfigError(
                f"{self.run_dir} has trained {self.state.epoch} epochs; --epochs is the total "
                f"to reach, so give more than {self.state.epoch}"
            )
        if self.writes:
            self.run_dir.write_config(self.model, self.config, summary)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed write (disk full, permissions) into one clear error; the atomic
        writes leave every previous file intact."""
        try:
            yield
        except OSError as err:
            assert self.run_dir is not None
            raise CheckpointError(
                f"could not write to {self.run_dir} ({err.strerror or err}); "
                f"{self.run_dir.resume_hint()} once it can be written (free space?)"
            ) from err

    def _checkpoint(self, partial: EpochState | None = None) -> None:
        assert self.run_dir is not None
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged(
                f"the weights became NaN/Inf in epoch {self.state.epoch}; not saved: "
                f"{self._ways_on()}"
            )
        snapshot = self.state.snapshot(partial)
        with self._writing():
            self.run_dir.save_checkpoint(
                self.model, self.optimizer, snapshot["state"], snapshot["tensors"]
            )

    def _figures(self) -> None:
        assert self.run_dir is not None
        generator = torch.Generator().manual_seed(0)
        with self._writing():
            self.run_dir.write("samples.png", samples_png(self.model, generator=generator))
            self.run_dir.write(
                "reconstructions.png", reconstructions_png(self.model, self.test.select(slice(32)))
            )

    # ---------------------------------------------------------------- training
    def _compile_if_worth_it(self, steps_ahead: int) -> None:
        """Compile the objective if ``config.compile`` asks for it, or (``auto``) if
        ``steps_ahead`` repay the start-up on a CPU or CUDA device in a single process (with
        DistributedDataParallel, compiling is left to ``on``: it is not measured here), for a
        model whose step has the same shapes every time (a semi-supervised step splits each
        batch by its labels: a graph break and new shapes every step)."""
        setting = self.config.compile
        if self.step_module is not self.eager_module:
            return  # compiled already (run() called again)
        if setting == "on" or (
            setting == "auto"
            and steps_ahead >= COMPILE_MIN_STEPS
            and self.device.type in ("cpu", "cuda")
            and self.world == 1
            and not self.model.infers_labels
        ):
            options = {"isolate_recompiles": True} if ISOLATES_RECOMPILES else {}
            self.step_module = torch.compile(self.eager_module, **options)

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
            reason = first_line(err)
            if self.config.compile == "on":
                raise ConfigError(
                    f"torch.compile failed ({reason}); train (or resume) with --compile off"
                ) from err
            tqdm.write(f"vaekit: torch.compile failed ({reason}); training without it")
            self.step_module = self.eager_module
            return self.step_module(*args)

    def _epoch_start(self, steps: int) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """``(order, sums, first step, seconds spent)`` of the epoch: a new shuffle, or where
        an interrupted epoch stopped."""
        partial, n = self.state.partial, self.epoch_rows
        if partial is None:
            order = torch.randperm(n, generator=self.state.data, device=self.train.x.device)
            sums = torch.zeros(steps, len(TERMS), dtype=torch.float64, device=self.device)
            return order, sums, 0, 0.0
        self.state.partial = None
        return (
            partial.order.to(self.train.x.device),
            partial.sums.to(self.device),
            partial.step,
            partial.seconds,
        )

    def _batch(self, order: torch.Tensor, step: int) -> tuple[Batch, torch.Tensor, int]:
        """This rank's share of the global batch of ``step`` and its noise, and the global
        batch size. The global batch and its draws are the same on every rank (shared seeds);
        each rank takes its share, so N ranks compute what one process would."""
        config = self.config
        index = order[step * config.batch_size : (step + 1) * config.batch_size]
        if self.rows is not None:
            index = self.rows[index]
        x, y = self.train.x[index], None if self.train.y is None else self.train.y[index]
        if self.train_scale is not None:
            scale = self.train_scale[index]
            x = x + scale * torch.randn(x.shape, generator=self.state.data, device=x.device)
        if self.batch_transform is not None:
            x = self.batch_transform(x, self.state.data)
        size = len(x)
        noise = torch.randn(
            (config.samples, size, self.model.noise_dim),
            generator=self.state.noise,
            device=self.device,
        )
        if self.world > 1:
            x, noise = (
                x.tensor_split(self.world)[self.rank],
                noise.tensor_split(self.world, 1)[self.rank],
            )
            y = None if y is None else y.tensor_split(self.world)[self.rank]
        y = None if y is None else y.to(self.device, non_blocking=True)
        return Batch(x.to(self.device, non_blocking=True), y), noise, size

    def _kl_weight(self, step: int, steps: int) -> float | torch.Tensor:
        """β at global ``step``: one number, or under a warm-up per layer each layer's ``(L,)``
        (a tensor on the device: a compiled step takes a new one without recompiling)."""
        if not self.config.layer_warmup_epochs:
            return kl_weight(self.config, step, steps)
        return torch.tensor(layer_kl_weights(self.config, step, steps), device=self.device)

    def _step(
        self, batch: Batch, noise: torch.Tensor, beta: float | torch.Tensor, size: int
    ) -> torch.Tensor:
        """One optimizer step; returns the step's detached term sums."""
        with self.autocast():
            loss, step_sums = self._objective(batch, noise, beta, size / self.world)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self._clip()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return step_sums

    def _clip(self) -> None:
        """Scale the gradient down to norm ``clip_grad_norm`` where it is larger, counting the
        steps clipped (on the device: no synchronisation per step)."""
        limit = self.config.clip_grad_norm
        if limit:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), limit)
            self.clipped += norm > limit

    def _train_epoch(self, bar: tqdm) -> dict[str, float]:
        config, state = self.config, self.state
        n, batch_size = self.epoch_rows, config.batch_size
        steps = math.ceil(n / batch_size)
        lr = learning_rate(config, state.epoch) * state.lr_scale
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        order, sums, first, spent = self._epoch_start(steps)
        # NaN checks and the progress bar look at the steps since the last check only, so the
        # work per check does not grow with the epoch (``seen``: this rank's examples so far)
        start, checked = time.perf_counter(), first
        seen = min(first * batch_size, n) // self.world
        totals = sums[:first].sum(0)
        beta = self._kl_weight(state.global_step, steps)
        for step in range(first, steps):
            if self.stop.requested or state.global_step == self.until_step:
                raise Interrupted(
                    EpochState(order, sums, step, spent + time.perf_counter() - start)
                )
            batch, noise, size = self._batch(order, step)
            beta = self._kl_weight(state.global_step, steps)
            sums[step] = self._step(batch, noise, beta, size)
            seen += len(batch.x)
            state.global_step += 1
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                block = sums[checked : step + 1]
                self._check_finite(block, checked)
                totals += block.sum(0)
                means = totals / (seen / self.rows_per_example)
                bar.update(step + 1 - checked)
                checked = step + 1
                bar.set_postfix_str(
                    f"epoch {state.epoch + 1}/{config.epochs} ELBO {means[0]:.2f} "
                    f"recon {means[1]:.2f} KL {means[2]:.2f}",
                    refresh=False,
                )
        return self.epoch_record(sums, lr, beta, spent + time.perf_counter() - start)

    def epoch_record(
        self, sums: torch.Tensor, lr: float, beta: float | torch.Tensor, seconds: float
    ) -> dict[str, float]:
        """An epoch's training record from its per-step term ``sums`` (steps, 3): the mean
        terms per training example (in a semi-supervised run, each example's L(x, y) or U(x)
        once, however often its row was repeated), the learning rate, β (at the epoch's last
        step; under a warm-up per layer, the configured β and each layer's ``beta_z1``, ...),
        the time, the rows per second, and the steps clipped."""
        n = self.epoch_rows
        means = (all_reduce_sum(sums.sum(0)) / len(self.train.x)).tolist()
        record = {f"train_{name}": value for name, value in zip(TERMS, means, strict=True)}
        if isinstance(beta, torch.Tensor):
            betas = (round(b, 6) for b in beta.tolist())  # float32: 6 decimals are its own
            record.update({f"beta_z{level}": b for level, b in enumerate(betas, 1)})
            beta = self.config.beta
        record.update(lr=lr, beta=beta, train_time_s=seconds, examples_per_s=n / seconds)
        if self.config.clip_grad_norm:  # the steps of this epoch (since a resume) clipped
            record["clipped_steps"] = int(self.clipped)
            self.clipped.zero_()
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
        raise TrainingDiverged(
            f"training diverged: the {'/'.join(bad) or 'ELBO'} term became {value} at epoch "
            f"{self.state.epoch + 1}, step {step + 1}; {self._ways_on()}"
        )

    def _ways_on(self) -> str:
        """After a divergence: what the run directory offers, and how to get past the step
        where it diverged (a resume as it was repeats it: the draws are the same)."""
        anew = "a lower --lr or --warmup-epochs"
        rolls_back = self.config.on_nan == "rollback"
        if self.run_dir is None:
            return f"try {anew}" + ("" if rolls_back else " or --on-nan rollback")
        if rolls_back:  # its rollbacks were spent: a resume tries again from its checkpoint
            return f"{self.run_dir.resume_hint()}, or train anew with {anew}"
        if not self.run_dir.resume_rolls_back:
            return (
                f"{self.run_dir.resume_hint()}, though resumed as it was it diverges again at "
                f"the same step: train anew with {anew}"
            )
        return (
            f"{self.run_dir.resume_hint(' --on-nan rollback')} (a divergence then returns to "
            "the last good epoch at half the learning rate; resumed as it was, the run diverges "
            f"again at the same step), or train anew with {anew}"
        )

    def _evaluate(self) -> dict[str, float]:
        """The held-out ELBO's terms (of log p(x), the labels hidden, for a model that infers
        them; of log p(x|y) for a conditional one), each layer's of a hierarchy, and the test
        error of a classifier."""
        model, test, size = self.model, self.test, self.config.eval_batch_size
        if model.infers_labels:
            test = Batch(test.x)
        summary = elbo_summary(elbo_in_batches(model, test, size))
        record = {f"test_{name}": mean.value for name, mean in summary.items()}
        record["test_elbo_stderr"] = summary["elbo"].stderr
        if model.infers_labels:
            record["test_error"] = classification_error(model, self.test, size)
        if len(model.layer_sizes) > 1:  # a hierarchy: each layer's rate and active units
            layers = layer_record(model, test, size)
            record.update({f"test_{key}": value for key, value in layers.items()})
        return record

    def _rollback(self, good: dict[str, Any] | None, error: TrainingDiverged) -> None:
        """Return to the last good epoch end with half the learning rate, or give up."""
        if good is None or self.rollbacks >= MAX_ROLLBACKS:
            raise error
        self.rollbacks += 1
        self.model.load_state_dict(good["model"])
        self.optimizer.load_state_dict(good["optimizer"])
        saved, state = good["state"], self.state
        state.epoch, state.global_step = saved["epoch"], saved["global_step"]
        state.elapsed_s = saved["elapsed_s"]
        state.lr_scale /= 2  # halved again at every try (the saved scale is the first try's)
        state.set_generators(good["tensors"])
        state.partial = None
        tqdm.write(
            f"vaekit: {error}; rolled back to epoch {state.epoch} with learning rate "
            f"x{state.lr_scale:g} ({self.rollbacks}/{MAX_ROLLBACKS})",
            file=sys.stderr,
        )

    def _good_state(self) -> dict[str, Any]:
        snapshot = self.state.snapshot()
        snapshot["model"] = copy.deepcopy(self.model.state_dict())
        snapshot["optimizer"] = copy.deepcopy(self.optimizer.state_dict())
        return snapshot

    def run(self, until_step: int | None = None) -> list[dict[str, Any]]:
        """Train until ``config.epochs`` (or, given ``until_step``, until that many steps in
        all, checkpointed where they end: how a sweep's member catches up); return the
        per-epoch metrics.

        Ctrl-C, SIGTERM or SIGHUP finishes the current step, writes a checkpoint that records
        the position inside the epoch, and raises :class:`Stopped`: ``resume`` then continues
        exactly where it stopped. A second signal stops at once (the last checkpoint stays).
        """
        self.until_step = until_step
        finished = False
        with stop_on_signals(self.stop):
            try:
                history = self._run()
                finished = True
                return history
            except Interrupted as stop:
                if self.writes:
                    self._checkpoint(stop.state)
                if self.stop.signum is None:  # the step asked for reached: go on from there
                    self.state.partial = stop.state
                    return self.history
                raise Stopped(self.stop.signum) from None
            finally:
                self.close_trackers(finished)

    def close_trackers(self, finished: bool) -> None:
        """Tell the trackers the run ended (``finished``) or stopped."""
        if self.writes:
            for tracker in self.trackers:
                tracker.close(finished)

    def _run(self) -> list[dict[str, Any]]:
        config, state = self.config, self.state
        steps = math.ceil(self.epoch_rows / config.batch_size)
        last_figures = time.perf_counter()
        good = self._good_state() if config.on_nan == "rollback" else None
        done = state.epoch * steps + (state.partial.step if state.partial else 0)
        self._compile_if_worth_it((self.until_step or config.epochs * steps) - done)
        with step_bar(config.epochs * steps, done, self.progress) as bar:
            while state.epoch < config.epochs:
                try:
                    record = self._train_epoch(bar)
                except TrainingDiverged as error:
                    self._rollback(good, error)
                    bar.reset(total=config.epochs * steps)
                    bar.update(state.epoch * steps)
                    continue
                self._end_epoch(record, bar)
                if good is not None:
                    good = self._good_state()
                if self.writes and time.perf_counter() - last_figures > FIGURE_INTERVAL_S:
                    self._figures()
                    last_figures = time.perf_counter()
        self.finish()
        return self.history

    def finish(self) -> None:
        """The end of training: the figures, what the trackers keep, the model in eval mode."""
        if self.writes:
            self._figures()
            assert self.run_dir is not None
            files = [self.run_dir / name for name in TRACKED_FILES]
            for tracker in self.trackers:
                tracker.log_files([path for path in files if path.is_file()])
        self.model.eval()

    def _end_epoch(self, record: dict[str, Any], bar: tqdm) -> None:
        """The held-out ELBO, the epoch's record and line, its metrics and checkpoint."""
        config, state = self.config, self.state
        record.update(self._evaluate())
        state.epoch += 1
        state.elapsed_s += record["train_time_s"]
        record = {"epoch": state.epoch, **record, "elapsed_s": state.elapsed_s}
        self.history.append(record)
        log_every = max(1, config.epochs // 10)
        if self.progress and (state.epoch % log_every == 0 or state.epoch == config.epochs):
            say(format_record(record, self.model.layer_sizes))
        if self.writes:
            assert self.run_dir is not None
            with self._writing():
                self.run_dir.write_metrics(self.history)
            if state.epoch % config.checkpoint_every == 0 or state.epoch == config.epochs:
                self._checkpoint()
            for tracker in self.trackers:  # after the run's own files: a tracker loses nothing
                tracker.log_epoch(record, self.model)


class _Objective(torch.nn.Module):
    """The training objective as a module, so that DistributedDataParallel can wrap it.

    ``forward(batch, noise, beta, share)`` returns ``(loss, sums)``: loss = −objective summed
    over the local examples / share, where ``share`` is the global batch divided by the number
    of ranks (DDP then averages the ranks' gradients into the gradient of the global-batch
    mean), and the detached sums of (ELBO, reconstruction, rate) over the local examples.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainConfig,
        labelled: LabelledWeights,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = OBJECTIVES[config.objective].builder(
            config.gradient, config.free_bits, bool(config.layer_warmup_epochs), labelled
        )

    def forward(
        self, batch: Batch, noise: torch.Tensor, beta: float | torch.Tensor, share: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        total, sums = self.objective(self.model, batch, noise, beta)
        return -total / share, sums


def format_record(record: dict[str, Any], sizes: tuple[int, ...] | None = None) -> str:
    """One line per epoch: terms in nats per example (summed over dimensions); during KL
    warm-up, the β that weighted the KL in the objective at the epoch's last step; for a
    hierarchy of latent layers of ``sizes``, a second line with each layer's rate and active
    units."""
    warmup = f", weighted ×{record['beta']:.2f}" if record["beta"] != 1 else ""
    line = (
        f"epoch {record['epoch']:>4}  train ELBO {record['train_elbo']:9.2f}  "
        f"held-out ELBO {record['test_elbo']:9.2f} (recon {record['test_reconstruction']:9.2f}, "
        f"KL {record['test_rate']:7.2f}{warmup})  {record['examples_per_s']:8.0f} ex/s"
    )
    if "test_error" in record:
        line += f"  test error {100 * record['test_error']:.2f}%"
    if sizes is None or len(sizes) == 1:
        return line
    return f"{line}\n      layers: {describe_layers(record, sizes, 'test_')}"


def fit(
    model: torch.nn.Module,
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
    run = RunDirectory(run_dir)
    trainer = Trainer(model, data, config, run, progress)  # checks first: no empty run dir
    _on_rank_zero(run.create)
    with _lock_on_rank_zero(run):
        if trainer.writes:
            run.write_config(model, trainer.config, data.summary())
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


def _lock_on_rank_zero(run: RunDirectory) -> contextlib.AbstractContextManager[None]:
    return run.lock() if rank_and_size()[0] == 0 else contextlib.nullcontext()


def resume(
    run_dir: str | Path,
    epochs: int | None = None,
    *,
    data: Dataset | None = None,
    progress: bool = True,
    verify: bool = True,
    accept_changed_data: bool = False,
    device: str | None = None,
    precision: str | None = None,
    compile: str | None = None,
    on_nan: str | None = None,
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """Continue the run in ``run_dir`` from its last checkpoint (to ``epochs`` in all, if
    given), or start it again from epoch 0 if it was stopped before its first checkpoint;
    return the model and all metrics. The data are reloaded from the run's config unless
    passed (needed for data that are not a file or standard dataset), and must be the data
    the run trained on (their SHA-256), unless ``accept_changed_data``. ``device``,
    ``precision`` and ``compile`` change how the steps are computed (a run moved to another
    type of device goes on, though not bit for bit: see
    :meth:`TrainingState.set_generators`); ``on_nan="rollback"`` takes a diverged run past
    the step where it diverged. What is given is recorded in its config from then on."""
    run = RunDirectory(run_dir)
    saved = run.config
    if saved.custom_networks:
        raise ConfigError(f"{run}: resume a run with custom networks from Python (vaekit.fit)")
    changes = {
        "epochs": epochs,
        "device": device,
        "precision": precision,
        "compile": compile,
        "on_nan": on_nan,
    }
    config = replace(saved.train, **{k: v for k, v in changes.items() if v is not None})
    if data is None:
        data = run.load_dataset(verify=verify)
    summary = data.summary()  # hashes the data once, for the check and for config.json
    check_same_data(run, summary, accept_changed_data)
    with _lock_on_rank_zero(run):
        torch.manual_seed(config.seed)  # as a new run builds its model
        model = build_model(saved.model)
        trainer = Trainer(model, data, config, run, progress)
        trainer.continue_from_checkpoint(summary)
        if trainer.writes:
            _note_stretched_schedule(saved.train, config, trainer.state.epoch)
        history = trainer.run()
    barrier()
    return model, history


def _note_stretched_schedule(before: TrainConfig, after: TrainConfig, epoch: int) -> None:
    """Say so when a resumed run's new --epochs changes a schedule that depends on it."""
    if before.epochs == after.epochs or before.lr_schedule not in ("cosine", "exponential"):
        return
    was, now = learning_rate(before, max(epoch - 1, 0)), learning_rate(after, epoch)
    say(
        f"vaekit: note: the {before.lr_schedule} learning-rate schedule now spans "
        f"{after.epochs} epochs instead of {before.epochs}: epoch {epoch + 1} trains at "
        f"{now:.3g} (the last epoch trained at {was:.3g})"
    )


def check_same_data(run: RunDirectory, summary: dict[str, Any], accept: bool) -> None:
    """Refuse data whose fingerprint (``Dataset.summary()``'s) differs from the run's."""
    recorded = run.config.data.get("sha256")
    if recorded is None or accept or recorded == summary["sha256"]:
        return
    raise DataError(
        f"{summary['name']}: these are not the data {run} trained on (their SHA-256 differs); "
        "resume on the same data, or pass --accept-changed-data to go on with these"
    )
