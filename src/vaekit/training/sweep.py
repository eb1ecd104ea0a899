"""``vaekit sweep``: models of one shape that differ in β and seed, trained together.

At the small batches of the published recipes one model's step is too small to keep a machine
busy; a sweep fills it. Each member is a normal run directory (``RUN/beta0.5-seed0/``:
loadable, evaluable, resumable alone) trained as ``vaekit train`` with its options would train
it: the same initial weights, data order, binarisations and draws, from its own generators.
Only the arithmetic is shared: the members' parameters are slices of stacked tensors, every
step is one batched forward and backward of all the members' objectives
(``torch.func.vmap``), and one Adam updates the stack (Adam is elementwise: N Adams in one).
The members' results equal their single runs' up to float round-off (tested).

What can be swept: β (``--beta 0.1,0.5,1``), the seed (``--seeds 0,1,2``) and the KL warm-up
(``--warmup-epochs 0,10``), every combination of them. Not: the shapes (latent size, networks,
batch size, samples), the objective and its options (free bits: one objective for all), and
the learning rate and its schedule (one Adam for all). A sweep stops, resumes and survives a
kill as a whole: ``vaekit sweep --resume RUN``; a member left behind by a kill between the
members' checkpoints first catches up alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from vaekit.console import step_bar
from vaekit.data import Batch, Dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.evaluate import evaluate_split
from vaekit.files import atomic_write_bytes, atomic_write_json
from vaekit.model import COMPONENTS, ModelConfig, build_model
from vaekit.model.config import DEFAULTS
from vaekit.model.likelihoods import prepare_for_vmap
from vaekit.training.config import TrainConfig
from vaekit.training.distributed import rank_and_size
from vaekit.training.interrupts import Stopped, StopRequest, stop_on_signals
from vaekit.training.run_dir import RunDirectory
from vaekit.training.schedule import kl_weight, learning_rate
from vaekit.training.state import EpochState
from vaekit.training.tracking import log_evaluation
from vaekit.training.trainer import (
    CHECK_EVERY,
    FIGURE_INTERVAL_S,
    Trainer,
    check_same_data,
    make_optimizer,
)
from vaekit.visuals.figures import rate_distortion_png

SWEEP = "sweep.json"


def member_name(beta: float, seed: int, warmup: int | None = None) -> str:
    """A member's folder: ``beta0.5-seed1``, or ``beta0.5-warmup10-seed1`` in a sweep of
    warm-ups."""
    return f"beta{beta:g}-{'' if warmup is None else f'warmup{warmup}-'}seed{seed}"


@dataclass
class SweepPlan:
    """A sweep's members: the model, the training options they share, and the β, the seeds
    and (if swept) the KL warm-ups whose every combination is one member."""

    model: dict[str, Any]
    train: TrainConfig
    betas: list[float]
    seeds: list[int]
    warmups: list[int] | None = None  # None: the training options' one warm-up

    def members(self) -> list[tuple[str, TrainConfig]]:
        warmups = self.warmups or [self.train.warmup_epochs]
        swept = self.warmups is not None
        return [
            (
                member_name(beta, seed, warmup if swept else None),
                replace(self.train, beta=beta, seed=seed, warmup_epochs=warmup),
            )
            for beta in self.betas
            for warmup in warmups
            for seed in self.seeds
        ]

    def setting(self, config: TrainConfig) -> str:
        """What a member's seeds share: its β (and warm-up, if swept)."""
        warmup = "" if self.warmups is None else f", warm-up {config.warmup_epochs}"
        return f"β = {config.beta:g}{warmup}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "train": self.train.to_dict(),
            "betas": self.betas,
            "seeds": self.seeds,
            "warmups": self.warmups,
        }

    @classmethod
    def read(cls, folder: Path) -> SweepPlan:
        path = folder / SWEEP
        if not path.is_file():
            raise ConfigError(f"{folder} is not a sweep (no {SWEEP}): start one with vaekit sweep")
        try:
            saved = json.loads(path.read_text())
            warmups = saved.get("warmups")  # absent in sweeps of β and seed alone
            return cls(
                saved["model"],
                TrainConfig.from_dict(saved["train"]),
                [float(b) for b in saved["betas"]],
                [int(s) for s in saved["seeds"]],
                None if warmups is None else [int(w) for w in warmups],
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path} is damaged ({err})") from None


def check_plan(plan: SweepPlan) -> None:
    """Refuse, in one line, what one stacked step cannot train."""
    train = plan.train
    if not plan.betas or not plan.seeds or plan.warmups == []:
        raise ConfigError("a sweep needs at least one β, one seed (and one warm-up)")
    names = [name for name, _ in plan.members()]  # each member's options checked here too
    if len(set(names)) != len(names):
        raise ConfigError("the sweep names a β, seed or warm-up twice")
    if train.on_nan != "stop":
        raise ConfigError("--on-nan rollback halves one member's learning rate: not in a sweep")
    if train.precision == "fp16":
        raise ConfigError("--precision fp16 scales each model's loss: use bf16 or fp32 in a sweep")
    if train.gradient == "dreg":
        raise ConfigError(
            "--gradient dreg reweights z's gradient by a hook, which a batched step does not "
            "keep: sweep with --gradient reparam, or train each model alone"
        )
    kind = COMPONENTS["model"][plan.model.get("model") or DEFAULTS["model"]].builder
    if train.layer_warmup_epochs:
        raise ConfigError(
            "a sweep weights each member's rate by one β: train a warm-up per layer alone"
        )
    if train.labelled is not None or kind.infers_labels:
        raise ConfigError("a semi-supervised step splits each batch by its labels: not in a sweep")
    if rank_and_size()[1] > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a sweep trains in one process: start it without torchrun")


class StackedStep:
    """The members' parameters stacked along a new first dimension, and the step that trains
    them all: one vmapped forward and backward, a clip per member, one Adam over the stacks.

    A stack of matrices (linear layers' weights) is laid out transposed in memory, as its
    gradient comes out of the batched backward; in the usual layout every weight gradient is
    copied into place every step (39% of a 784-400-20 step at batch 20, torch.profiler). Adam
    sees each stack through a contiguous alias (the transposed view: the same memory), since
    the fused Adam copies strided tensors in and out. Each member's parameters and Adam state
    are views of the stacks: its model and optimizer always hold its current state (for its
    evaluation and checkpoint), at no copy.
    """

    def __init__(self, members: list[Trainer]) -> None:
        modules = [member.eager_module for member in members]
        self.members = members
        params, buffers = stack_module_state(modules)  # type: ignore[arg-type]
        self.params = {name: _transposed_layout(p).requires_grad_() for name, p in params.items()}
        self.aliases = {name: _contiguous(p.detach()) for name, p in self.params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(modules[0]).to("meta")
        prepare_for_vmap(self.base)
        config = members[0].config
        self.optimizer = make_optimizer(self.aliases.values(), config.lr, config.adam_eps)
        if members[0].optimizer.state:
            self._stack_optimizer_state()
        self._share()
        self.uses_labels = members[0].train.y is not None

    def _stack_optimizer_state(self) -> None:
        """On resume: the members' Adam states (restored from their checkpoints) stacked."""
        pairs = [(m.optimizer, dict(m.eager_module.named_parameters())) for m in self.members]
        for name, alias in self.aliases.items():
            states = [optimizer.state[params[name]] for optimizer, params in pairs]
            moments = {
                key: _contiguous(torch.stack([state[key] for state in states])).contiguous()
                for key in ("exp_avg", "exp_avg_sq")
            }
            self.optimizer.state[alias] = {"step": states[0]["step"].clone(), **moments}

    def _share(self) -> None:
        """Point each member's parameters (and Adam state, once there is one) at its slices."""
        for i, member in enumerate(self.members):
            for name, param in member.eager_module.named_parameters():
                param.data = self.params[name].data[i]
                state = self.optimizer.state.get(self.aliases[name])
                if state:
                    member.optimizer.state[param] = {
                        "step": state["step"],
                        "exp_avg": _contiguous(state["exp_avg"])[i],
                        "exp_avg_sq": _contiguous(state["exp_avg_sq"])[i],
                    }

    def _objective(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor | None,
        noise: torch.Tensor,
        beta: torch.Tensor,
        share: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's (loss, term sums), as its own training step computes them."""
        return functional_call(self.base, (params, buffers), (Batch(x, y), noise, beta, share))

    def step(
        self, batches: list[Batch], noises: list[torch.Tensor], betas: list[float]
    ) -> torch.Tensor:
        """One optimizer step of every member on its batch, noise and β; returns the members'
        detached term sums ``(N, 3)``."""
        x = torch.stack([batch.x for batch in batches])
        y = torch.stack([batch.y for batch in batches]) if self.uses_labels else None  # type: ignore[misc]
        beta = torch.tensor(betas, dtype=x.dtype, device=x.device)
        share = float(len(batches[0].x))
        in_dims = (0, 0, 0, 0 if y is not None else None, 0, 0, None)
        loss, sums = vmap(self._objective, in_dims=in_dims)(
            self.params, self.buffers, x, y, torch.stack(noises), beta, share
        )
        for param in self.params.values():
            param.grad = None
        loss.sum().backward()  # each member's loss reaches only its own slices
        self._clip()
        for name, param in self.params.items():
            self.aliases[name].grad = None if param.grad is None else _contiguous(param.grad)
        first = not self.optimizer.state
        self.optimizer.step()
        if first:
            self._share()  # Adam made its state at this step: share it too
        return sums.detach()

    def _clip(self) -> None:
        """Each member's gradient scaled down to norm ``clip_grad_norm`` where it is larger
        (as ``torch.nn.utils.clip_grad_norm_`` does for one model), counting the steps."""
        limit = self.members[0].config.clip_grad_norm
        if not limit:
            return
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        squares = sum(g.pow(2).flatten(1).sum(1) for g in grads)
        norms = torch.sqrt(squares)  # type: ignore[arg-type]
        factor = (limit / (norms + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(factor.view(-1, *[1] * (grad.dim() - 1)))
        for member, clipped in zip(self.members, norms > limit, strict=True):
            member.clipped += clipped

    def set_lr(self, lr: float) -> None:
        """The learning rate of this epoch (of the members' optimizers too: checkpointed)."""
        for optimizer in (self.optimizer, *(m.optimizer for m in self.members)):
            for group in optimizer.param_groups:
                group["lr"] = lr


def _transposed_layout(stacked: torch.Tensor) -> torch.Tensor:
    """A stack of matrices ``(N, out, in)`` stored as ``(N, in, out)``; others as they are."""
    if stacked.dim() != 3:
        return stacked.detach()
    return stacked.detach().transpose(1, 2).contiguous().transpose(1, 2)


def _contiguous(tensor: torch.Tensor) -> torch.Tensor:
    """The contiguous alias of a stack stored transposed (its transpose, the same memory), or
    the stack itself; the alias of a member's slice of it is its slice, transposed back."""
    return tensor.transpose(1, 2) if tensor.dim() == 3 else tensor


class SweepInterrupted(Exception):
    """Ctrl-C at a step boundary of a sweep: each member's position inside the epoch."""

    def __init__(self, states: list[EpochState]) -> None:
        super().__init__("interrupted")
        self.states = states


class Sweep:
    """The members' trainers (each with its run directory) and the loop that steps them
    together; see the module's note."""

    def __init__(self, folder: Path, plan: SweepPlan, data: Dataset, progress: bool) -> None:
        check_plan(plan)  # before any member is built
        self.folder, self.plan, self.progress = folder, plan, progress
        self.members: list[Trainer] = []
        self.rng_states: list[torch.Tensor] = []  # each member's own torch generator
        for name, config in plan.members():
            torch.manual_seed(config.seed)  # as vaekit train builds the model
            model = build_model(ModelConfig.from_options(data.shape, **plan.model))
            member = Trainer(model, data, config, folder / name, progress=False)
            member.run_dir.resume_command = f"vaekit sweep --resume {folder}"  # type: ignore[union-attr]
            member.run_dir.resume_rolls_back = False  # type: ignore[union-attr]
            if self.members:  # the same examples: held once (on a GPU, too)
                member.train, member.test = self.members[0].train, self.members[0].test
            self.members.append(member)
            self.rng_states.append(torch.get_rng_state())
        self.data = data
        self.stop = StopRequest()

    @contextlib.contextmanager
    def _own_rng(self, index: int) -> Iterator[None]:
        """torch's global generator as member ``index`` alone would have it (its held-out
        ELBO draws from it, and its checkpoint saves it)."""
        torch.set_rng_state(self.rng_states[index])
        try:
            yield
        finally:
            self.rng_states[index] = torch.get_rng_state()

    def create(self) -> None:
        """The sweep's folder, its plan, and each member's run directory and config."""
        if (self.folder / SWEEP).exists():
            raise ConfigError(
                f"{self.folder} already holds a sweep: continue it (vaekit sweep --resume "
                f"{self.folder}) or choose another --run-dir"
            )
        for member in self.members:  # refuses a folder holding a run, before any write
            assert member.run_dir is not None
            if member.run_dir.is_run():
                member.run_dir.create()
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / SWEEP, self.plan.to_dict())
        summary = self.data.summary()
        for member in self.members:
            assert member.run_dir is not None
            member.run_dir.create()
            member.run_dir.write_config(member.model, member.config, summary)

    def restore(self) -> None:
        """Each member from its checkpoint (the data checked against its record); those a
        kill left behind catch up alone. The plan (with its new ``epochs``) is saved again."""
        summary = self.data.summary()
        atomic_write_json(self.folder / SWEEP, self.plan.to_dict())
        for index, member in enumerate(self.members):
            run = member.run_dir
            assert run is not None
            if not run.is_run():  # killed before its config was written: it starts now
                run.create()
                run.write_config(member.model, member.config, summary)
            check_same_data(run, summary, accept=False)
            with run.lock(), self._own_rng(index):
                member.continue_from_checkpoint(summary)
        ahead = max(member.state.global_step for member in self.members)
        for index, member in enumerate(self.members):
            if member.state.global_step < ahead:
                with member.run_dir.lock(), self._own_rng(index):  # type: ignore[union-attr]
                    member.run(until_step=ahead)

    def run(self) -> None:
        """Train every member to ``epochs``; Ctrl-C checkpoints each where the sweep stopped."""
        finished = False
        with contextlib.ExitStack() as locks, stop_on_signals(self.stop):
            for member in self.members:
                locks.enter_context(member.run_dir.lock())  # type: ignore[union-attr]
            try:
                self._run()
                finished = True
            except SweepInterrupted as stop:
                for index, (member, state) in enumerate(
                    zip(self.members, stop.states, strict=True)
                ):
                    with self._own_rng(index):
                        member._checkpoint(state)
                assert self.stop.signum is not None
                raise Stopped(self.stop.signum) from None
            finally:
                for member in self.members:
                    member.close_trackers(finished)

    def _run(self) -> None:
        members, config = self.members, self.members[0].config
        stacked = StackedStep(members)
        steps = math.ceil(members[0].epoch_rows / config.batch_size)
        state = members[0].state
        done = state.epoch * steps + (state.partial.step if state.partial else 0)
        last_figures = time.perf_counter()
        with step_bar(config.epochs * steps, done, self.progress) as bar:
            while state.epoch < config.epochs:
                self._epoch(stacked, steps, bar)
                if time.perf_counter() - last_figures > FIGURE_INTERVAL_S:  # as a single run
                    for index, member in enumerate(members):
                        with self._own_rng(index):
                            member._figures()
                    last_figures = time.perf_counter()
        for index, member in enumerate(members):
            with self._own_rng(index):
                member.finish()

    def evaluate(self, k: int, limit: int | None = None) -> None:
        """Each member's evaluation (``vaekit evaluate``'s: log p̂_K, the identity's terms,
        the diagnostics) on its first ``limit`` test examples (all: None), saved in its run
        directory (and its MLflow run, if tracked), so the summary shows log p̂_K."""
        for index, member in enumerate(self.members):
            run = member.run_dir
            assert run is not None
            with self._own_rng(index):
                result, _, _ = evaluate_split(
                    member.model, self.data, k, member.config.dataset, limit=limit
                )
            run.save_evaluation(result.to_dict())
            log_evaluation(run.path, result.to_dict(), result.table())

    def _epoch(self, stacked: StackedStep, steps: int, bar: tqdm) -> None:
        members, config = self.members, self.members[0].config
        lr = learning_rate(config, members[0].state.epoch)
        stacked.set_lr(lr)
        for member in members:
            member.model.train()
        starts = [member._epoch_start(steps) for member in members]
        first = checked = starts[0][2]
        start = time.perf_counter()
        for step in range(first, steps):
            if self.stop.requested:
                seconds = time.perf_counter() - start
                raise SweepInterrupted(
                    [EpochState(o, s, step, spent + seconds) for o, s, _, spent in starts]
                )
            drawn = [m._batch(start[0], step) for m, start in zip(members, starts, strict=True)]
            betas = [kl_weight(m.config, m.state.global_step, steps) for m in members]
            sums = stacked.step([d[0] for d in drawn], [d[1] for d in drawn], betas)
            for member, (_, member_sums, *_rest), row in zip(members, starts, sums, strict=True):
                member_sums[step] = row
                member.state.global_step += 1
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps:
                for member, (_, member_sums, *_rest) in zip(members, starts, strict=True):
                    member._check_finite(member_sums[checked : step + 1], checked)
                bar.update(step + 1 - checked)
                checked = step + 1
        for index, (member, (_, member_sums, _, spent)) in enumerate(
            zip(members, starts, strict=True)
        ):
            seconds = spent + time.perf_counter() - start
            beta = kl_weight(member.config, member.state.global_step - 1, steps)
            record = member.epoch_record(member_sums, lr, beta, seconds)
            with self._own_rng(index):
                member._end_epoch(record, bar)


def summarize(folder: Path) -> str:
    """The sweep's summary: each member's held-out terms at its last epoch (and log p̂_K,
    where ``vaekit evaluate`` saved one), then mean ± standard deviation over the seeds of
    each β; writes ``rate_distortion.png`` and ``summary.json`` into the sweep's folder and
    returns the table."""
    points = sweep_points(folder)
    if not points:
        raise ConfigError(f"{folder}: no member has finished an epoch yet")
    atomic_write_json(folder / "summary.json", {"members": points})
    atomic_write_bytes(folder / "rate_distortion.png", rate_distortion_png(points))
    return _summary_table(points)


def sweep_points(folder: Path) -> list[dict[str, Any]]:
    """Each member's β, seed, last epoch, held-out ELBO, distortion and rate, and log p̂_K
    where ``vaekit evaluate`` saved one (members without a finished epoch left out)."""
    plan = SweepPlan.read(folder)
    points = []
    for name, config in plan.members():
        run = RunDirectory(folder / name)
        history = run.read_metrics() if run.is_run() else []
        if not history:
            continue
        last = history[-1]
        evaluation = run.read_evaluation()
        points.append(
            {
                "member": name,
                "setting": plan.setting(config),
                "beta": config.beta,
                "warmup_epochs": config.warmup_epochs,
                "seed": config.seed,
                "epoch": last["epoch"],
                "elbo": last["test_elbo"],
                "distortion": -last["test_reconstruction"],
                "rate": last["test_rate"],
                "log_px": None if evaluation is None else evaluation["log_px"]["value"],
                "k": None if evaluation is None else evaluation["k"],
                "n": None if evaluation is None else evaluation["n"],
            }
        )
    return points


def _summary_table(points: list[dict[str, Any]]) -> str:
    lines = [
        "held-out terms in nats per example (distortion D = −reconstruction, rate R = KL) at "
        "the last epoch; log p̂_K from vaekit evaluate (on its n test examples)",
        f"{'member':<22}{'epoch':>6}{'ELBO':>10}{'D':>10}{'R':>9}{'log p̂_K':>12}",
    ]
    for p in points:
        log_px = "—" if p["log_px"] is None else f"{p['log_px']:.2f} (K={p['k']}, n={p['n']})"
        lines.append(
            f"{p['member']:<22}{p['epoch']:>6}{p['elbo']:>10.2f}{p['distortion']:>10.2f}"
            f"{p['rate']:>9.2f}  {log_px}"
        )
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        by_setting.setdefault(p["setting"], []).append(p)
    lines.append("mean ± standard deviation over the seeds:")
    for setting, group in by_setting.items():
        cells = []
        for key in ("elbo", "distortion", "rate", "log_px"):
            values = [p[key] for p in group if p[key] is not None]
            if len(values) > 1:
                spread = statistics.stdev(values)
                cells.append(f"{key} {statistics.fmean(values):.2f} ± {spread:.2f}")
            elif values:
                cells.append(f"{key} {values[0]:.2f}")
        seeds = f"{len(group)} seed{'s' if len(group) > 1 else ''}"
        lines.append(f"  {setting} ({seeds}): " + ", ".join(cells))
    return "\n".join(lines)
