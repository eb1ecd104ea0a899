"""The ``vaekit`` command line: train, sample, reconstruct, encode, evaluate, identity.

User mistakes print one line, ``vaekit: error: <what is wrong and what to do>``, and exit
with status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import signal
import sys
import tempfile
import time
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from vaekit.checks import fits_in_memory, positive_float, positive_int, seed
from vaekit.compare import check_claim, comparison_table, read_evaluations
from vaekit.config_file import read_config_file, run_config_toml
from vaekit.console import say, silence_stdout
from vaekit.data import Dataset, load_dataset
from vaekit.data.batch import Batch
from vaekit.errors import ConfigError, VaekitError
from vaekit.evaluation.codes import CodeOptions, codes_as_data, latent_codes
from vaekit.evaluation.evaluate import evaluate_split, evaluation_batch
from vaekit.export import export_run, push_run
from vaekit.files import atomic_write_bytes
from vaekit.hub import hub_folder, is_hub_id
from vaekit.model import COMPONENTS, build_model
from vaekit.model.config import DEFAULTS, ModelConfig
from vaekit.recipes import available as available_recipes
from vaekit.recipes import load_recipe
from vaekit.report import PLOTS, DataSource
from vaekit.threads import choose_threads
from vaekit.training.config import DEVICES, TrainConfig
from vaekit.training.distributed import (
    broadcast,
    finish,
    init_from_environment,
    rank_and_size,
    resolve_device,
)
from vaekit.training.interrupts import Stopped
from vaekit.training.run_dir import RunDirectory, load
from vaekit.training.tracking import log_evaluation
from vaekit.training.trainer import fit, resume
from vaekit.version import __version__
from vaekit.visuals.grids import save_examples, save_reconstructions

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a process killed by SIGPIPE


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default, unless it has none or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == []:
            return text
        if default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"vaekit: error: {message} (see '{self.prog} --help')\n")


def _number_list(kind: type, what: str) -> Callable[[str], list[Any]]:
    """The parser of a comma-separated list of ``kind`` (int or float), e.g. ``200,200``."""

    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
        return values

    return parse


SWEEP_RESUMABLE = ("epochs", "data_dir", "dataset", "device", "precision", "compile")
"""The options a resumed sweep may change: the length, where the same data are, and how its
steps are computed."""
RESUMABLE = (*SWEEP_RESUMABLE, "on_nan")
"""The options a resumed run may change: a sweep's, and what it does if it diverges (a sweep
cannot roll back)."""


def _may_change(names: tuple[str, ...]) -> str:
    """``names`` (RESUMABLE or SWEEP_RESUMABLE) as the error line of a resume says them."""
    flags = [f"--{name.replace('_', '-')}" for name in names if name not in ("dataset", "data_dir")]
    return f"only {', '.join(flags)}, and --dataset or --data-dir for the same data may change"


_int_list = _number_list(int, "integers")
_float_list = _number_list(float, "numbers")


def _add_data_options(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--dataset",
        help=f"digits, mnist, fashion-mnist, a .npy/.npz file or an image folder ({default_help})",
    )
    parser.add_argument(
        "--data-dir",
        help="folder holding the four MNIST-style .gz IDX files "
        "(default: download once into ~/.cache/vaekit)",
    )
    parser.add_argument("--image-size", type=int, help="resize every image of a folder to N x N")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the SHA-256 check of MNIST-style files"
    )


def _add_fields(
    group: argparse._ArgumentGroup,
    config: type,
    skip: tuple[str, ...] = (),
    owners: dict[str, str] | None = None,
) -> None:
    """One flag per field of the dataclass ``config``, with its help, choices, type and
    default (see :func:`vaekit.checks.option`); ``owners`` says who takes each option."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if f.name in skip:
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        text = f.metadata.get("help", "")
        if owners:
            text += f" ({owners[f.name]})"
        if default is not None:
            text += f" (default: {shown})"
        flag, text = "--" + f.name.replace("_", "-"), text.replace("%", "%%")
        if hints[f.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        else:
            convert = _converter(hints[f.name])
            group.add_argument(flag, type=convert, choices=f.metadata.get("choices"), help=text)


def _converter(kind: Any) -> Callable[[str], Any]:
    """The parser of a field's type: ``int``, ``float``, ``str``, ``list[int]`` or optional
    ones of these."""
    if kind == list[int]:
        return _int_list
    for simple in (int, float, str):
        if kind is simple or simple in typing.get_args(kind):
            return simple
    raise TypeError(f"no command-line type for {kind}")


def _add_model_options(group: argparse._ArgumentGroup) -> None:
    """``--latent-dim``, a choice per component kind, and every registered component's
    options (a flag shared by components means the same for each)."""
    group.add_argument("--latent-dim", type=int, help="the size of z (default: 20)")
    for kind, registry in COMPONENTS.items():
        described = "; ".join(f"{entry.name}: {entry.help}" for entry in registry)
        group.add_argument(
            f"--{kind}",
            choices=registry.names(),
            help=f"{described} (default: {DEFAULTS[kind]})".replace("%", "%%"),
        )
    owners: dict[str, list[str]] = {}
    for kind, registry in COMPONENTS.items():
        for entry in registry:
            for name in entry.option_names():
                owners.setdefault(name, []).append(f"--{kind} {entry.name}")
    added: set[str] = set()
    for registry in COMPONENTS.values():
        for entry in registry:
            skip = tuple(name for name in entry.option_names() if name in added)
            _add_fields(group, entry.options, skip, {k: ", ".join(v) for k, v in owners.items()})
            added.update(entry.option_names())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vaekit",
        description="Variational autoencoders: train by maximising "
        "the ELBO, then encode, reconstruct and generate. All terms are in nats "
        "per example, summed over dimensions.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads (default: $VAEKIT_THREADS, else the cores free when the command "
        "starts: a core busy with another job slows every thread down)",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_command(commands)
    _add_sweep_command(commands)
    _add_recipes_command(commands)
    _add_sample_command(commands)
    _add_reconstruct_command(commands)
    _add_encode_command(commands)
    _add_evaluate_command(commands)
    _add_compare_command(commands)
    _add_config_command(commands)
    _add_export_command(commands)
    _add_push_command(commands)
    _add_identity_command(commands)
    _add_report_command(commands)
    _add_plot_command(commands)
    return parser


def _add_train_command(commands: Any) -> None:
    train = commands.add_parser("train", help="train a VAE (default: on the embedded digits)")
    train.add_argument("--run-dir", help="where to write the run (default: runs/<dataset>-<time>)")
    train.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from its last "
        "checkpoint (with --epochs: to that many epochs in all)",
    )
    train.add_argument(
        "--recipe",
        help="start from a named recipe (see 'vaekit recipes'); other options override its fields",
    )
    train.add_argument(
        "--config",
        metavar="TOML",
        help="start from a configuration file ([model] and [train] tables, as 'vaekit config "
        "RUN' writes); options given beside it override its fields (and it a recipe's)",
    )
    train.add_argument(
        "--no-verify", action="store_true", help="skip the SHA-256 check of MNIST-style files"
    )
    train.add_argument(
        "--accept-changed-data",
        action="store_true",
        help="with --resume: go on although the data differ from those the run trained on",
    )
    _add_model_options(train.add_argument_group("model"))
    _add_fields(train.add_argument_group("training"), TrainConfig, skip=("recipe",))
    train.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    train.set_defaults(handler=cmd_train)


def _add_sweep_command(commands: Any) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train models that differ in β and seed together, one batched step for all: each "
        "a run directory, and the rate-distortion plane of them",
    )
    sweep.add_argument("--run-dir", help="the sweep's folder (default: runs/sweep-<time>)")
    sweep.add_argument(
        "--resume", metavar="SWEEP", help="continue a sweep (with --epochs: to that many in all)"
    )
    sweep.add_argument(
        "--summarize",
        metavar="SWEEP",
        help="write a sweep's summary again (e.g. after 'vaekit evaluate' of its members)",
    )
    sweep.add_argument(
        "--beta",
        dest="betas",
        type=_float_list,
        help="the members' β, e.g. 0.1,0.5,1,2 (default: 1)",
    )
    sweep.add_argument(
        "--seeds", type=_int_list, help="the members' seeds, e.g. 0,1,2 (default: 0)"
    )
    sweep.add_argument(
        "--warmup-epochs",
        dest="warmups",
        type=_int_list,
        help="the members' epochs of linear KL warm-up, e.g. 0,10 (default: 0, or the recipe's)",
    )
    sweep.add_argument(
        "--evaluate",
        type=int,
        metavar="K",
        help="at the end, evaluate each model (log p̂_K, as vaekit evaluate -k K) for the summary",
    )
    sweep.add_argument(
        "--evaluate-limit", type=int, metavar="N", help="evaluate on the first N test examples"
    )
    sweep.add_argument("--recipe", help="start from a named recipe, as vaekit train does")
    sweep.add_argument("--config", metavar="TOML", help="start from a configuration file")
    sweep.add_argument(
        "--no-verify", action="store_true", help="skip the SHA-256 check of MNIST-style files"
    )
    _add_model_options(sweep.add_argument_group("model"))
    swept = ("recipe", "beta", "seed", "warmup_epochs")
    _add_fields(sweep.add_argument_group("training"), TrainConfig, skip=swept)
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(handler=cmd_sweep)


def _add_recipes_command(commands: Any) -> None:
    recipes = commands.add_parser("recipes", help="list the named training recipes")
    recipes.set_defaults(handler=cmd_recipes)


def _add_sample_command(commands: Any) -> None:
    sample = commands.add_parser("sample", help="generate from p(z) and p(x|z)")
    sample.add_argument("run", nargs="+", help="run directory or model.safetensors")
    sample.add_argument("-n", type=int, default=64, help="number of samples")
    sample.add_argument("-o", "--output", help=".png grid or .npy array (default: RUN/samples.png)")
    sample.add_argument(
        "--temperature",
        type=_float_list,
        default=1.0,
        help="z from the prior at temperature T, or one per latent layer of a hierarchy, "
        "bottom to top (e.g. 1,0.5)",
    )
    sample.add_argument(
        "--draw", action="store_true", help="draw x ~ p(x|z) instead of taking its mean"
    )
    sample.add_argument(
        "--label",
        type=int,
        help="a conditional model's class y for every sample (default: each class in turn)",
    )
    sample.add_argument("--seed", type=int, default=0, help="seed of every draw (z, and x)")
    sample.set_defaults(handler=cmd_sample)


def _add_reconstruct_command(commands: Any) -> None:
    recon = commands.add_parser("reconstruct", help="inputs beside their reconstructions")
    recon.add_argument("run", nargs="+", help="run directory or model.safetensors")
    _add_data_options(recon, "default: the run's")
    recon.add_argument("-n", type=int, default=32, help="number of test examples")
    recon.add_argument("-o", "--output", help=".png (default: RUN/reconstructions.png)")
    recon.set_defaults(handler=cmd_reconstruct)


def _add_encode_command(commands: Any) -> None:
    encode = commands.add_parser("encode", help="latent means E_q[z|x] (or draws) of a dataset")
    encode.add_argument("run", nargs="+", help="run directory or model.safetensors")
    _add_data_options(encode, "default: the run's")
    encode.add_argument(
        "--split", choices=("train", "test", "all"), help="the examples to encode (default: test)"
    )
    encode.add_argument(
        "--draw", action="store_true", help="draw z ~ q(z|x) instead of taking its mean"
    )
    encode.add_argument("--seed", type=int, default=0, help="seed of the draws (with --draw)")
    encode.add_argument(
        "--as-data",
        action="store_true",
        help="write both splits' codes as a dataset .npz (x_train, x_test and their labels "
        "y_train, y_test; the means' x_train_scale, q's standard deviations, where q is one "
        "diagonal Gaussian) that vaekit train --dataset reads: a model of the codes, e.g. M2 "
        "on a VAE's latent codes (M1+M2; it trains on fresh draws of them, --no-draw-codes: "
        "on the means)",
    )
    encode.add_argument(
        "--active-only",
        action="store_true",
        help="with --as-data: keep only the active units, Cov_x E_q[z_d|x] > 0.01 over the "
        "training examples (Kingma et al. 2014 kept those of M1 for M1+M2)",
    )
    encode.add_argument(
        "--layer",
        type=int,
        help="one latent layer of a hierarchy: 1 is z_1, the layer the decoder reads (default: "
        "every layer, bottom to top); with --as-data, the layer q draws first, given x alone "
        "(z_L of top-down or x-and-above inference, z_1 of bottom-up), comes with its scales",
    )
    encode.add_argument(
        "--standardize",
        action="store_true",
        help="with --as-data: each unit at mean 0 and standard deviation 1 over the training "
        "codes (the scales too; x_mean and x_std say how), for codes far from unit scale, "
        "e.g. under a VampPrior",
    )
    encode.add_argument(
        "-o",
        "--output",
        help="(default: z.npy; codes.npz with --as-data) .npy (beside it <name>.labels.npy, "
        ".index.npy: each code's row in your data, .files.npy: its file in an image folder, "
        ".classes.npy: the label names) or .npz (z and those)",
    )
    encode.set_defaults(handler=cmd_encode)


def _add_evaluate_command(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="ELBO, log p̂_K(x), the gap and the diagnostics; writes evaluation.json"
    )
    evaluate.add_argument("run", nargs="+", help="run directory or model.safetensors")
    _add_data_options(evaluate, "default: the run's")
    evaluate.add_argument("--split", choices=("train", "test", "all"), default="test")
    evaluate.add_argument("-k", type=int, default=5000, help="importance samples per example")
    evaluate.add_argument(
        "--k-sweep",
        type=_int_list,
        default=[],
        help="also report L_K for these K, e.g. 1,10,100,1000,5000",
    )
    evaluate.add_argument("--limit", type=int, help="evaluate the first N examples only")
    evaluate.add_argument("--per-example", metavar="CSV", help="write per-example terms here")
    evaluate.add_argument(
        "-o",
        "--output",
        help="also write the evaluation (JSON) here; a run keeps every evaluation in "
        "RUN/evaluations/, and RUN/evaluation.json is its fullest of the current weights",
    )
    evaluate.add_argument(
        "--classify",
        type=int,
        metavar="K",
        help="a conditional model: log p̂_K(x|y) of every class with K draws, for the label's "
        "worth and the classifier argmax p(y|x)",
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the K draws")
    evaluate.add_argument(
        "--device", choices=DEVICES, default="auto", help="auto: CUDA, else MPS, else CPU"
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=cmd_evaluate)


def _add_compare_command(commands: Any) -> None:
    compare = commands.add_parser(
        "compare",
        help="the identity's terms of several runs side by side (from each evaluation.json)",
    )
    compare.add_argument("runs", nargs="+", help="run directories trained on the same data")
    compare.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    print(comparison_table(read_evaluations([str(_run_dir(run)) for run in args.runs])))
    return 0


def _add_config_command(commands: Any) -> None:
    config = commands.add_parser(
        "config", help="print a run's configuration as TOML (vaekit train --config reruns it)"
    )
    config.add_argument("run", nargs="+", help="run directory")
    config.set_defaults(handler=cmd_config)


def cmd_config(args: argparse.Namespace) -> int:
    sys.stdout.write(run_config_toml(RunDirectory(_run_dir(args.run))))
    return 0


def _add_export_command(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="a model folder in the Hugging Face Hub's layout, with a model card whose numbers "
        "'vaekit evaluate' can check",
    )
    export.add_argument("run", nargs="+", help="run directory (with an evaluation)")
    export.add_argument("folder", help="a new or empty folder to write")
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    for path in export_run(RunDirectory(_run_dir(args.run)), Path(args.folder)):
        print(f"wrote {path}")
    return 0


def _add_push_command(commands: Any) -> None:
    push = commands.add_parser(
        "push",
        help="export a run (as vaekit export does) and upload it to the Hugging Face Hub; "
        "needs pip install 'vaekit[hub]'",
    )
    push.add_argument("run", nargs="+", help="run directory (with an evaluation)")
    push.add_argument("repo", help="owner/name[@branch] on the Hub (created if new)")
    push.add_argument("--private", action="store_true", help="a new repository is private")
    push.set_defaults(handler=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    url = push_run(RunDirectory(_run_dir(args.run)), args.repo, args.private)
    print(f"pushed {args.run} to {args.repo}: {url}")
    return 0


def _add_identity_command(commands: Any) -> None:
    identity = commands.add_parser(
        "identity", help="check log p(x) = ELBO + KL exactly on a fitted linear-Gaussian VAE"
    )
    _add_data_options(identity, "default: digits")
    identity.add_argument("--latent-dim", type=int, default=8)
    identity.add_argument("--epochs", type=int, default=200)
    identity.add_argument(
        "--layers",
        type=int,
        default=1,
        help="latent layers: 1, or a top-down hierarchy whose upper layers halve in size",
    )
    identity.add_argument(
        "-k",
        type=_int_list,
        default=[1, 10, 100, 1000],
        help="IWAE sample sizes to compare with the exact log p(x)",
    )
    identity.add_argument("--seed", type=int, default=0, help="seed of the fit and the draws")
    identity.set_defaults(handler=cmd_identity)


def _add_report_command(commands: Any) -> None:
    report = commands.add_parser("report", help="write RUN/report.html, a self-contained page")
    report.add_argument("run", nargs="+", help="run directory (or its model.safetensors)")
    report.add_argument(
        "-k", type=int, default=1000, help="K of the evaluation, when the run has none yet"
    )
    report.add_argument(
        "--limit", type=int, default=2000, help="test examples of that evaluation (0: all)"
    )
    _add_data_options(report, "default: the run's, where it recorded them")
    report.set_defaults(handler=cmd_report)


def _add_plot_command(commands: Any) -> None:
    plot = commands.add_parser(
        "plot",
        help="one of the report's figures as a PNG (identity "
        "and kl need 'vaekit evaluate RUN' first)",
    )
    plot.add_argument("run", nargs="+", help="run directory (or its model.safetensors)")
    plot.add_argument("--what", choices=PLOTS, required=True)
    plot.add_argument("-o", "--output", help="PNG path (default: RUN/<what>.png)")
    _add_data_options(plot, "default: the run's, where it recorded them")
    plot.set_defaults(handler=cmd_plot)


# ------------------------------------------------------------------------- commands
def _model_option_names() -> set[str]:
    names = {"latent_dim", *COMPONENTS}
    for registry in COMPONENTS.values():
        for entry in registry:
            names.update(entry.option_names())
    return names


def _given(args: argparse.Namespace, names: set[str]) -> dict[str, Any]:
    """The options named ``names`` that were given on the command line."""
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _train_option_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def cmd_train(args: argparse.Namespace) -> int:
    """Train (under torchrun: one rank of a DistributedDataParallel run)."""
    distributed = init_from_environment(args.device or "auto")
    try:
        return _train(args, distributed)
    finally:
        finish()


def cmd_sweep(args: argparse.Namespace) -> int:
    from vaekit.training.sweep import Sweep, SweepPlan, summarize

    if args.summarize:
        print(summarize(Path(args.summarize)))
        return 0
    progress = not args.no_progress
    if (args.evaluate is not None and args.evaluate <= 0) or (
        args.evaluate_limit is not None and args.evaluate_limit <= 0
    ):
        raise ConfigError("--evaluate K and --evaluate-limit N must be positive")
    if args.resume:
        given = {**_given(args, _model_option_names()), **_given(args, _train_option_names())}
        may_change = {name: given.pop(name) for name in SWEEP_RESUMABLE if name in given}
        planned = (args.betas, args.seeds, args.warmups, args.recipe, args.config, args.run_dir)
        if given or any(planned):
            raise ConfigError(
                f"--resume continues the sweep as planned; {_may_change(SWEEP_RESUMABLE)}"
            )
        _check_writable(args.resume)
        folder = Path(args.resume)
        plan = SweepPlan.read(folder)
        plan.train = dataclasses.replace(plan.train, **may_change)
        train = plan.train
        data = load_dataset(train.dataset, train.data_dir, train.image_size, not args.no_verify)
        sweep = Sweep(folder, plan, data, progress)
        sweep.restore()
    else:
        model_options, config, data = _new_run(args)
        folder = Path(args.run_dir or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
        warmups = args.warmups
        if warmups is not None and len(warmups) == 1:  # one warm-up: not swept
            config, warmups = dataclasses.replace(config, warmup_epochs=warmups[0]), None
        plan = SweepPlan(model_options, config, args.betas or [1.0], args.seeds or [0], warmups)
        sweep = Sweep(folder, plan, data, progress)
        sweep.create()
    start = time.perf_counter()
    with _stopped_in(
        lambda: f"each model's checkpoint is kept: continue with 'vaekit sweep --resume {folder}'"
    ):
        sweep.run()
    if args.evaluate is not None:
        sweep.evaluate(args.evaluate, args.evaluate_limit)
    print(summarize(folder))
    print(f"{len(sweep.members)} models in {time.perf_counter() - start:.1f} s; sweep: {folder}")
    return 0


def _new_run(args: argparse.Namespace) -> tuple[dict[str, Any], TrainConfig, Dataset]:
    """A new run's model options, training configuration and data, from a recipe, a
    configuration file and the options given (each overriding the one before)."""
    recipe = load_recipe(args.recipe) if args.recipe else None
    file_model, file_train = read_config_file(args.config) if args.config else ({}, {})
    model_options = {
        **(recipe.model if recipe else {}),
        **file_model,
        **_given(args, _model_option_names()),
    }
    train_options = _override(
        recipe.train if recipe else {}, file_train, _given(args, _train_option_names())
    )
    if recipe:
        train_options["recipe"] = f"{recipe.name}@{recipe.version}"
    config = TrainConfig(**train_options)
    data = load_dataset(config.dataset, config.data_dir, config.image_size, not args.no_verify)
    kind = COMPONENTS["model"][model_options.get("model") or DEFAULTS["model"]]
    if "classes" in kind.option_names() and "classes" not in model_options:
        model_options["classes"] = data.label_count()  # the data's classes, unless given
    return model_options, config, data


# one KL warm-up in two forms: one for every layer, or one per layer
WARMUP_FORMS = ("warmup_epochs", "layer_warmup_epochs")


def _override(*levels: dict[str, Any]) -> dict[str, Any]:
    """Training options, each level overriding the ones before; a warm-up given in one form
    replaces an earlier level's in the other (``--layer-warmup-epochs 10,50`` on a recipe with
    ``warmup_epochs``), while both forms at one level stay a conflict for TrainConfig."""
    merged: dict[str, Any] = {}
    for level in levels:
        given = [form for form in WARMUP_FORMS if form in level]
        if len(given) == 1:
            merged.pop(WARMUP_FORMS[1 - WARMUP_FORMS.index(given[0])], None)
        merged.update(level)
    return merged


def _train(args: argparse.Namespace, distributed: bool) -> int:
    if args.resume:
        if args.config:
            raise ConfigError("--config starts a new run; --resume continues one as it was")
        return _resume(args)
    rank = rank_and_size()[0]
    progress = not args.no_progress and rank == 0
    if args.accept_changed_data:
        raise ConfigError("--accept-changed-data goes with --resume")
    model_options, config, data = _new_run(args)
    torch.manual_seed(config.seed)
    model = build_model(ModelConfig.from_options(data.shape, **model_options))
    run_dir = Path(
        broadcast(
            args.run_dir or f"runs/{Path(config.dataset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    )
    if progress:
        threads = args.threads
        say(
            f"vaekit: {data.name} {data.shape}: {len(data.train_x)} train / "
            f"{len(data.test_x)} test examples -> {run_dir}; {threads.threads} "
            f"thread{'s' if threads.threads > 1 else ''} ({threads.why}; --threads N to choose)"
        )
        for note in _run_notes(model, data, config):
            say(f"vaekit: note: {note}")
    start = time.perf_counter()
    try:
        with _stopped_in(RunDirectory(run_dir).resume_hint):
            history = fit(model, data, config, run_dir, progress=progress)
    finally:
        if not args.run_dir and rank == 0 and RunDirectory(run_dir).is_run():
            _point_latest_at(run_dir)
    if rank == 0:
        world = f" on {rank_and_size()[1]} ranks" if distributed else ""
        _report(run_dir, history, time.perf_counter() - start, world)
    return 0


def _run_notes(model: torch.nn.Module, data: Dataset, config: TrainConfig) -> list[str]:
    """What a new run's header says of its data beyond their size."""
    notes = [model.likelihood.advice(data) or ""]
    if data.train_scale is not None and config.draw_codes:
        notes.append(
            "the training codes come with their scales: each batch is a fresh draw "
            "x ~ N(mean, scale²) (--no-draw-codes: the means)"
        )
    if model.infers_labels and config.labelled is not None:
        notes.append(
            f"{config.labelled} of the {len(data.train_x)} training examples keep their "
            "labels (fewer than half: repeated to fill about half of every batch), weighted so "
            "that an epoch counts each one's bound once and its log q(y|x) α N/N_l times "
            f"(Kingma et al.'s J^α, α = {model.classification_weight:g})"
        )
    return [note for note in notes if note]


def _resume(args: argparse.Namespace) -> int:
    given = {**_given(args, _model_option_names()), **_given(args, _train_option_names())}
    changes = {name: given.pop(name) for name in RESUMABLE if name in given}
    if given or args.recipe or args.run_dir:
        option = next(iter(given), "recipe" if args.recipe else "run_dir")
        raise ConfigError(
            f"--resume continues the run as configured; drop --{option.replace('_', '-')} "
            f"({_may_change(RESUMABLE)})"
        )
    _check_writable(args.resume)
    run = RunDirectory(args.resume)
    data = None
    if args.data_dir or args.dataset:
        data = run.load_dataset(args.dataset, args.data_dir, verify=not args.no_verify)
    start = time.perf_counter()
    with _stopped_in(run.resume_hint):
        _, history = resume(
            run.path,
            args.epochs,
            data=data,
            progress=not args.no_progress and rank_and_size()[0] == 0,
            verify=not args.no_verify,
            accept_changed_data=args.accept_changed_data,
            **{name: changes.get(name) for name in ("device", "precision", "compile", "on_nan")},
        )
    if rank_and_size()[0] == 0:
        _report(run.path, history, time.perf_counter() - start)
    return 0


@contextlib.contextmanager
def _stopped_in(hint: Callable[[], str]) -> Iterator[None]:
    """A stopped run (signal) says where it stands and how to go on (``hint()``, asked once
    it stopped)."""
    try:
        yield
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        raise Stopped(signum, f"stopped by {name}; {hint()}") from None


def cmd_recipes(args: argparse.Namespace) -> int:
    for name in available_recipes():
        recipe = load_recipe(name)
        published = recipe.published.get("test_nll")
        note = f" (published test NLL {published} nats)" if published else ""
        print(f"{name}@{recipe.version}{note}\n    {recipe.description}")
    return 0


def _report(run_dir: Path, history: list[dict[str, Any]], seconds: float, where: str = "") -> None:
    last = history[-1]
    epochs = f"{last['epoch']} epoch" + ("s" if last["epoch"] != 1 else "")
    error = f", test error {100 * last['test_error']:.2f}%" if "test_error" in last else ""
    say(
        f"held-out ELBO {last['test_elbo']:.2f} ± {last['test_elbo_stderr']:.2f} nats/example "
        f"(reconstruction {last['test_reconstruction']:.2f}, KL {last['test_rate']:.2f}){error} "
        f"after {epochs}; {seconds:.1f} s{where}; run: {run_dir}"
    )


def _model_and_data(args: argparse.Namespace) -> tuple[torch.nn.Module, Dataset]:
    """The model of ``args.run`` and the dataset named on the command line (else the run's
    own)."""
    model = load(args.run)
    run = RunDirectory(args.run)
    if not args.dataset and not run.path.is_dir():
        raise ConfigError(f"{run} is a weights file: name the data with --dataset")
    data = run.load_dataset(args.dataset, args.data_dir, args.image_size, not args.no_verify)
    if data.shape != model.input_shape:
        raise ConfigError(
            f"the data's examples have shape {data.shape} but the model expects {model.input_shape}"
        )
    return model, data


def _check_output(path: str, suffixes: tuple[str, ...], option: str = "-o") -> Path:
    """``path`` as an output file: its suffix one of ``suffixes``, its folder there and
    writable (else one line, naming ``option`` to choose another)."""
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"output {path!r} must end in {' or '.join(suffixes)}")
    if not out.parent.exists():
        raise ConfigError(f"output folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise ConfigError(f"output {path!r} is a folder; name a file")
    if why := _unwritable(out.parent):
        raise ConfigError(
            f"{out.parent} cannot be written ({why}); name another file with {option}"
        )
    return out


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _check_writable(path: str) -> None:
    """Refuse, before minutes of work, a run directory whose results could not be saved."""
    run = Path(path)
    if run.is_dir() and (why := _unwritable(run)):
        raise ConfigError(
            f"{run} cannot be written ({why}), so the results could not be saved there; copy "
            "the run somewhere writable"
        )


def _unwritable(folder: Path) -> str | None:
    """Why nothing can be written in ``folder`` (read-only, full, no permission), or None."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        return str(err.strerror or err)
    return None


def cmd_sample(args: argparse.Namespace) -> int:
    temperatures = args.temperature if isinstance(args.temperature, list) else [args.temperature]
    positive_int("-n", args.n)
    for t in temperatures:
        positive_float("--temperature", t, allow_zero=True)
    temperature = temperatures[0] if len(temperatures) == 1 else temperatures
    shown = ",".join(f"{t:g}" for t in temperatures)
    seed("--seed", args.seed)
    out = _check_output(args.output or _default_output(args, "samples.png"), (".png", ".npy"))
    model = load(args.run)
    fits_in_memory(f"{args.n:,} samples", 8 * args.n * math.prod(model.input_shape))
    generator = torch.Generator().manual_seed(args.seed)
    x = model.sample(
        args.n, temperature, mean=not args.draw, generator=generator, labels=args.label
    )
    given_y = ", y" if model.uses_labels else ""
    what = f"draws from p(x|z{given_y})" if args.draw else f"means of p(x|z{given_y})"
    if out.suffix == ".npy":
        atomic_write_bytes(out, _npy_bytes(x.numpy()))
    else:
        by_class = model.classes is not None and args.label is None  # each class in turn
        ncol = model.classes if by_class else 8
        given = f", class {args.label}" if args.label is not None else ""
        columns = "; column c: class c" if by_class else ""
        save_examples(x, out, ncol, title=f"samples (T={shown}, {what}{given}{columns})")
    print(f"wrote {args.n} samples ({what}, temperature {shown}) to {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    if args.n <= 0:
        raise ConfigError("-n must be positive")
    out = _check_output(args.output or _default_output(args, "reconstructions.png"), (".png",))
    model, data = _model_and_data(args)
    batch = evaluation_batch(model, data, "test")
    batch = batch.select(slice(args.n))
    save_reconstructions(model, batch, out)
    print(f"wrote {len(batch.x)} test examples and their reconstructions to {out}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    seed("--seed", args.seed)
    if args.as_data and args.split:
        raise ConfigError("--as-data writes both splits: leave out --split")
    for flag, given in (("--active-only", args.active_only), ("--standardize", args.standardize)):
        if given and not args.as_data:
            raise ConfigError(f"{flag} changes --as-data's codes: add --as-data")
    if args.layer is not None:
        positive_int("--layer", args.layer)
    layer = None if args.layer is None else args.layer - 1  # 0 is z_1
    options = CodeOptions(args.draw, layer, args.active_only, args.standardize)
    output = args.output or ("codes.npz" if args.as_data else "z.npy")
    out = _check_output(output, (".npz",) if args.as_data else (".npy", ".npz"))
    model, data = _model_and_data(args)
    generator = torch.Generator().manual_seed(args.seed)
    what = "draws z ~ q(z|x)" if args.draw else "means"
    if options.layer is not None:
        what += f" of z_{options.layer + 1}"
    if args.as_data:
        columns, note = codes_as_data(model, data, options, generator)
        _write_codes(out, columns)
        shape = columns["x_train"].shape[1:]
        also = "" if columns["x_train_scale"] is None else " (the training codes' scales too)"
        print(f"wrote latent {what} {shape} of both splits as a dataset to {out}{also}{note}")
        return 0
    split = args.split or "test"
    batch = evaluation_batch(model, data, split)
    index = data.index(split).numpy()
    columns = {
        "z": latent_codes(model, batch, options, generator).values,
        "labels": None if batch.y is None else batch.y.numpy(),
        "index": index,
        "files": None if data.sources is None else np.array([data.sources[i] for i in index]),
        "classes": None if data.classes is None else np.array(data.classes),
    }
    _write_codes(out, columns)
    given = ", ".join(name for name, value in columns.items() if value is not None)
    print(f"wrote latent {what} {columns['z'].shape} of the {split} split ({given}) to {out}")
    return 0


def _write_codes(out: Path, columns: dict[str, np.ndarray | None]) -> None:
    """An ``.npz`` with every column, or ``out.npy`` (z) with each other column beside it as
    ``<name>.<column>.npy`` (an earlier output's column that these codes lack is removed:
    it would be taken for theirs)."""
    if out.suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **{name: value for name, value in columns.items() if value is not None})
        atomic_write_bytes(out, buffer.getvalue())
        return
    for name, value in columns.items():
        if name == "z":
            continue
        beside = out.with_suffix(f".{name}.npy")
        if value is not None:
            atomic_write_bytes(beside, _npy_bytes(value))
        elif beside.exists():
            beside.unlink()
    atomic_write_bytes(out, _npy_bytes(columns["z"]))


def cmd_evaluate(args: argparse.Namespace) -> int:
    seed("--seed", args.seed)
    if args.limit is not None and args.limit <= 0:
        raise ConfigError("--limit must be positive")
    csv_path = (
        _check_output(args.per_example, (".csv",), "--per-example") if args.per_example else None
    )
    if args.output:
        _check_output(args.output, (".json",))
    saves_into_run = RunDirectory(args.run).is_run() and args.hub_id is None  # not the cache
    if saves_into_run:
        _check_writable(args.run)
    model, data = _model_and_data(args)
    model.to(resolve_device(args.device))
    result, batch, rows = evaluate_split(
        model,
        data,
        args.k,
        args.dataset or run_data_name(args.run),
        args.split,
        args.limit,
        k_sweep=args.k_sweep,
        seed=args.seed,
        progress=not args.no_progress,
    )
    # the files first: minutes of evaluation survive a closed pipe (vaekit evaluate ... | head)
    written: list[Path] = []
    run = RunDirectory(args.run)
    claim = _claim(run, model, args.split)
    if saves_into_run:
        written += run.save_evaluation(result.to_dict())
    if args.output:
        result.save(args.output)
        written.append(Path(args.output))
    if csv_path is not None:
        result.save_per_example(csv_path, batch.y, rows, data.sources, data.classes)
        written.append(csv_path)
    kept = (
        ""
        if not saves_into_run or run / "evaluation.json" in written
        else (f"\n{run / 'evaluation.json'} is kept: it is a fuller evaluation of these weights")
    )
    tracked = log_evaluation(run.path, result.to_dict(), result.table()) if saves_into_run else None
    checked = "" if claim is None else "\n" + check_claim(claim, result.to_dict())
    classified = "" if args.classify is None else "\n" + _classify(model, data, batch, args)
    print(
        "\n".join([result.table(), *(f"wrote {path}" for path in written)])
        + ("" if tracked is None else f"\nlogged the evaluation to {tracked}")
        + kept
        + checked
        + classified
    )
    return 0


def _classify(model: torch.nn.Module, data: Dataset, batch: Batch, args: argparse.Namespace) -> str:
    """The label's worth and the classifier of a conditional model (``--classify K``)."""
    from vaekit.evaluation.labels import class_evidence, label_worth

    if model.classes is None:
        raise ConfigError("--classify needs a conditional model (vaekit train --model conditional)")
    if args.classify <= 0:
        raise ConfigError("--classify K needs a positive K")
    counts = torch.bincount(data.train_y, minlength=model.classes).double()  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(args.seed)
    evidence = class_evidence(model, batch, args.classify, generator)
    return label_worth(evidence, batch.y, counts / counts.sum(), args.classify).table()


def _claim(run: RunDirectory, model: torch.nn.Module, split: str) -> dict[str, Any] | None:
    """The run's saved evaluation of these weights on this split (e.g. an exported model's,
    which its card reports), to check the new one against; None if it has none."""
    if not run.is_run():
        return None
    saved, reason = run.evaluation_of(model)
    if saved is None or reason is not None or split != "test":
        return None
    return saved


def run_data_name(path: str) -> str:
    """The dataset a run (or a weights file, which does not say) trained on."""
    run = RunDirectory(path)
    return run.config.train.dataset if run.is_run() else "the given data"


def cmd_identity(args: argparse.Namespace) -> int:
    from vaekit.evaluation.identity import identity_check
    from vaekit.training.linear_gaussian import fit_linear_gaussian

    name = args.dataset or "digits"
    data = load_dataset(name, args.data_dir, args.image_size, not args.no_verify)
    if not 0 < args.latent_dim < math.prod(data.shape):
        raise ConfigError(f"--latent-dim must be between 1 and {math.prod(data.shape) - 1}")
    if args.epochs <= 0 or args.layers <= 0 or min(args.k) <= 0:
        raise ConfigError("--epochs, --layers and every -k must be positive")
    seed("--seed", args.seed)
    if len(data.test_x) < 2 or len(data.train_x) <= args.latent_dim:
        raise ConfigError(
            f"{name}: the identity needs more than --latent-dim ({args.latent_dim}) training "
            "examples and at least 2 held-out ones"
        )
    model = fit_linear_gaussian(data, args.latent_dim, args.epochs, args.seed, layers=args.layers)
    print(f"{name}: {len(data.test_x)} held-out examples")
    print(identity_check(model, data.test_x, tuple(args.k), args.seed).table())
    return 0


def _run_dir(path: str) -> Path:
    """The run directory ``path`` names (or whose ``model.safetensors`` it names)."""
    run = Path(path)
    if run.is_file() and (run.parent / "config.json").is_file():
        run = run.parent
    if not (run / "config.json").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.json)")
    return run


def _source(args: argparse.Namespace) -> DataSource:
    return DataSource(args.dataset, args.data_dir, args.image_size)


def _one_run(runs: list[str]) -> str:
    """The one run a command was given (a shell pattern may have matched several)."""
    if len(runs) > 1:
        shown = ", ".join(runs[:3]) + (", ..." if len(runs) > 3 else "")
        raise ConfigError(
            f"{len(runs)} runs given ({shown}); name one (runs/latest is the newest run)"
        )
    return runs[0]


def _default_output(args: argparse.Namespace, name: str) -> str:
    """``RUN/name`` for a run directory, else (a weights file, a Hub model in the Hugging Face
    cache) ``name`` in the current directory."""
    run = Path(args.run)
    return str(run / name) if run.is_dir() and args.hub_id is None else name


def _resolve_hub_ids(args: argparse.Namespace) -> None:
    """The Hub models a command was given (``hf://owner/name``) as their folders in the Hugging
    Face cache; ``args.hub_id``: the id of ``args.run``, or None."""
    args.hub_id = None
    if is_hub_id(getattr(args, "run", None)):
        args.hub_id, args.run = args.run, str(hub_folder(args.run))
    if hasattr(args, "runs"):
        args.runs = [str(hub_folder(run)) if is_hub_id(run) else run for run in args.runs]


def _point_latest_at(run: Path) -> None:
    """Make ``runs/latest`` (beside a default-named run) a link to ``run``, atomically."""
    link = run.parent / "latest"
    if link.exists() and not link.is_symlink():
        return  # a user's own file or folder of that name
    temporary = run.parent / f".latest.{os.getpid()}"
    with contextlib.suppress(OSError):  # a folder where links cannot be made: no link
        temporary.unlink(missing_ok=True)
        os.symlink(run.name, temporary)
        os.replace(temporary, link)


def cmd_report(args: argparse.Namespace) -> int:
    from vaekit.report import build_report

    positive_int("-k", args.k)
    positive_int("--limit", args.limit, allow_zero=True)
    if args.hub_id is not None:
        raise ConfigError(
            f"the report is written into the run's folder, and {args.hub_id} is in the Hugging "
            "Face cache: download a copy (hf download OWNER/NAME --local-dir DIR) and report on DIR"
        )
    _check_writable(args.run)
    path = build_report(_run_dir(args.run), args.k, args.limit or None, _source(args))
    print(f"wrote {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vaekit.report import plot

    run = _run_dir(args.run)
    name = f"{args.what}.png"  # beside the run, or here for a model in the Hub's cache
    out = _check_output(args.output or (name if args.hub_id else str(run / name)), (".png",))
    atomic_write_bytes(out, plot(run, args.what, _source(args)))
    print(f"wrote {out}")
    return 0


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object) -> str:
    return f"vaekit: warning: {' '.join(str(message).split())}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning  # numpy's and PIL's warnings: one line each
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    threads_before = torch.get_num_threads()
    try:
        if isinstance(getattr(args, "run", None), list):
            args.run = _one_run(args.run)
        _resolve_hub_ids(args)
        args.threads = choose_threads(args.threads)
        torch.set_num_threads(args.threads.threads)
        return handler(args)
    except VaekitError as err:
        if args.debug:
            raise
        print(f"vaekit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of stdout went away (| head): no traceback; silence the final flush
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as err:  # the machine's files: a full disk, a read-only folder, a bad path
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"vaekit: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        message = str(stop) or "interrupted; nothing was written"
        print(f"vaekit: {message}", file=sys.stderr)
        return 128 + stop.signum if isinstance(stop, Stopped) else EXIT_INTERRUPTED
    finally:
        torch.set_num_threads(threads_before)  # main() called in a process that goes on
