"""The ``vaekit`` command line: train, sample, reconstruct, encode, evaluate, identity.

User mistakes print one line, ``vaekit: error: <what is wrong and what to do>``, and exit
with status 2 (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from vaekit.config import (
    ACTIVATIONS,
    BINARIZE,
    COMPILE,
    DEVICES,
    INITS,
    LIKELIHOODS,
    LR_SCHEDULES,
    NETWORKS,
    OBJECTIVES,
    ON_NAN,
    PRECISIONS,
    ModelConfig,
    TrainConfig,
)
from vaekit.data import load_dataset, protocol_examples
from vaekit.errors import ConfigError, DataError, VaekitError
from vaekit.evaluation.evaluate import evaluate
from vaekit.model.likelihoods import on_8bit_levels
from vaekit.model.vae import VAE
from vaekit.objectives.elbo import reparameterise
from vaekit.recipes import available as available_recipes
from vaekit.recipes import load_recipe
from vaekit.training.checkpoint import load, read_config
from vaekit.training.distributed import broadcast, finish, init_from_environment, rank_and_size
from vaekit.training.io import atomic_write_bytes
from vaekit.training.trainer import fit, resume
from vaekit.visuals.grids import save_examples, save_reconstructions
from vaekit.visuals.report import PLOTS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a process killed by SIGPIPE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"vaekit: error: {message} (see '{self.prog} --help')\n")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one layer size")
    return values


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vaekit",
        description="Variational autoencoders: train by maximising "
        "the ELBO, then encode, reconstruct and generate. All terms are in nats "
        "per example, summed over dimensions.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train a VAE (default: on the embedded digits)")
    _add_data_options(train, "default: digits")
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
    model = train.add_argument_group("model (defaults: vaekit.ModelConfig)")
    model.add_argument("--network", choices=NETWORKS)
    model.add_argument(
        "--hidden",
        type=_int_list,
        help="hidden layer sizes, e.g. 400 or 200,200 (conv: dense layer width)",
    )
    model.add_argument("--latent-dim", type=int)
    model.add_argument("--activation", choices=ACTIVATIONS)
    model.add_argument("--likelihood", choices=LIKELIHOODS)
    model.add_argument(
        "--gaussian-scale",
        type=float,
        help="the Gaussian's standard deviation, or the discretized logistic's scale (at the "
        "start, with --learn-scale)",
    )
    model.add_argument(
        "--learn-scale",
        action=argparse.BooleanOptionalAction,
        help="learn that scale per data dimension",
    )
    model.add_argument(
        "--decoded-scale",
        action=argparse.BooleanOptionalAction,
        help="decode that scale from z, per example and dimension (the decoder outputs it)",
    )
    model.add_argument("--init", choices=INITS, help="weight initialisation")
    run = train.add_argument_group("training (defaults: vaekit.TrainConfig)")
    run.add_argument(
        "--binarize",
        choices=BINARIZE,
        help="dynamic: fresh Bernoulli draw of each batch (default for bernoulli)",
    )
    run.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="elbo, or iwae (the importance-weighted bound with --samples K)",
    )
    for flag, text in (
        ("--output-bias", "start the decoder's output bias at logit(mean training image)"),
        ("--data-on-device", "keep the whole dataset on the device (GPU)"),
        ("--tensorboard", "also write TensorBoard event files into RUN/tensorboard"),
    ):
        run.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
    run.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    run.add_argument(
        "--compile",
        choices=COMPILE,
        help="torch.compile the training objective (~10%% faster steps after a start-up of "
        "~7 s); auto (default): for single-process runs of 50,000 steps or more",
    )
    run.add_argument("--device", choices=DEVICES, help="auto (default): CUDA, else MPS, else CPU")
    run.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 (default); bf16 or fp16 (CUDA) under torch.autocast",
    )
    run.add_argument(
        "--on-nan",
        choices=ON_NAN,
        help="stop (default), or roll back to the last epoch with half the lr",
    )
    for option in (
        "epochs",
        "batch_size",
        "samples",
        "lr",
        "lr_final",
        "adam_eps",
        "beta",
        "warmup_epochs",
        "seed",
        "checkpoint_every",
    ):
        default = TrainConfig.__dataclass_fields__[option].default
        run.add_argument(
            f"--{option.replace('_', '-')}", type=type(default), help=f"(default: {default})"
        )
    train.add_argument("--no-progress", action="store_true", help="no progress bar or epoch lines")
    train.set_defaults(handler=cmd_train)

    recipes = commands.add_parser("recipes", help="list the named training recipes")
    recipes.set_defaults(handler=cmd_recipes)

    sample = commands.add_parser("sample", help="generate from p(z) and p(x|z)")
    sample.add_argument("run", help="run directory or model.safetensors")
    sample.add_argument("-n", type=int, default=64, help="number of samples")
    sample.add_argument("-o", "--output", default="samples.png", help=".png grid or .npy array")
    sample.add_argument("--temperature", type=float, default=1.0, help="z ~ N(0, T² I)")
    sample.add_argument(
        "--draw", action="store_true", help="draw x ~ p(x|z) instead of taking its mean"
    )
    sample.add_argument("--seed", type=int, default=0, help="seed of every draw (z, and x)")
    sample.set_defaults(handler=cmd_sample)

    recon = commands.add_parser("reconstruct", help="inputs beside their reconstructions")
    recon.add_argument("run", help="run directory or model.safetensors")
    _add_data_options(recon, "default: the run's")
    recon.add_argument("-n", type=int, default=32, help="number of test examples")
    recon.add_argument("-o", "--output", default="reconstructions.png")
    recon.set_defaults(handler=cmd_reconstruct)

    encode = commands.add_parser("encode", help="latent means E_q[z|x] (or draws) of a dataset")
    encode.add_argument("run", help="run directory or model.safetensors")
    _add_data_options(encode, "default: the run's")
    encode.add_argument("--split", choices=("train", "test"), default="test")
    encode.add_argument(
        "--draw", action="store_true", help="draw z ~ q(z|x) instead of taking its mean"
    )
    encode.add_argument("--seed", type=int, default=0, help="seed of the draws (with --draw)")
    encode.add_argument(
        "-o",
        "--output",
        default="z.npy",
        help=".npy (labels beside it as <name>.labels.npy) or .npz (z, labels)",
    )
    encode.set_defaults(handler=cmd_encode)

    evaluate = commands.add_parser(
        "evaluate", help="ELBO, log p̂_K(x), the gap and the diagnostics; writes evaluation.json"
    )
    evaluate.add_argument("run", help="run directory or model.safetensors")
    _add_data_options(evaluate, "default: the run's")
    evaluate.add_argument("--split", choices=("train", "test"), default="test")
    evaluate.add_argument("-k", type=int, default=5000, help="importance samples per example")
    evaluate.add_argument(
        "--k-sweep",
        type=_int_list,
        default=[],
        help="also report L_K for these K, e.g. 1,10,100,1000,5000",
    )
    evaluate.add_argument("--limit", type=int, help="evaluate the first N examples only")
    evaluate.add_argument("--per-example", metavar="CSV", help="write per-example terms here")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(handler=cmd_evaluate)

    identity = commands.add_parser(
        "identity", help="check log p(x) = ELBO + KL exactly on a fitted linear-Gaussian VAE"
    )
    _add_data_options(identity, "default: digits")
    identity.add_argument("--latent-dim", type=int, default=8)
    identity.add_argument("--epochs", type=int, default=200)
    identity.add_argument(
        "-k",
        type=_int_list,
        default=[1, 10, 100, 1000],
        help="IWAE sample sizes to compare with the exact log p(x)",
    )
    identity.add_argument("--seed", type=int, default=0)
    identity.set_defaults(handler=cmd_identity)

    report = commands.add_parser("report", help="write RUN/report.html, a self-contained page")
    report.add_argument("run", help="run directory")
    report.add_argument(
        "-k", type=int, default=1000, help="K of the evaluation, when the run has none yet"
    )
    report.add_argument(
        "--limit", type=int, default=2000, help="test examples of that evaluation (0: all)"
    )
    report.add_argument("--data-dir", help="where the run's MNIST-style files are now")
    report.set_defaults(handler=cmd_report)

    plot = commands.add_parser(
        "plot",
        help="one of the report's figures as a PNG (identity "
        "and kl need 'vaekit evaluate RUN' first)",
    )
    plot.add_argument("run", help="run directory")
    plot.add_argument("--what", choices=PLOTS, required=True)
    plot.add_argument("-o", "--output", help="PNG path (default: RUN/<what>.png)")
    plot.add_argument("--data-dir", help="where the run's MNIST-style files are now")
    plot.set_defaults(handler=cmd_plot)
    return parser


# ------------------------------------------------------------------------- commands
def _given(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The options of ``config_class`` given on the command line."""
    names = {f.name for f in fields(config_class)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def cmd_train(args: argparse.Namespace) -> int:
    """Train (under torchrun: one rank of a DistributedDataParallel run)."""
    distributed = init_from_environment(args.device or "auto")
    try:
        return _train(args, distributed)
    finally:
        finish()


def _train(args: argparse.Namespace, distributed: bool) -> int:
    rank = rank_and_size()[0]
    progress = not args.no_progress and rank == 0
    if args.resume:
        given = {**_given(args, ModelConfig), **_given(args, TrainConfig)}
        given.pop("epochs", None)
        given.pop("data_dir", None)
        if given or args.recipe or args.run_dir:
            option = next(iter(given), "recipe" if args.recipe else "run_dir")
            raise ConfigError(
                f"--resume continues the run as configured; drop --{option.replace('_', '-')} "
                "(only --epochs and --data-dir may change)"
            )
        data = None
        if args.data_dir:
            _, config, _ = read_config(Path(args.resume))
            data = load_dataset(
                config.dataset, args.data_dir, config.image_size, not args.no_verify
            )
        start = time.perf_counter()
        _, history = resume(
            args.resume, args.epochs, data=data, progress=progress, verify=not args.no_verify
        )
        if rank == 0:
            _report(Path(args.resume), history, time.perf_counter() - start)
        return 0
    recipe = load_recipe(args.recipe) if args.recipe else None
    model_options = {**(recipe.model if recipe else {}), **_given(args, ModelConfig)}
    train_options = {**(recipe.train if recipe else {}), **_given(args, TrainConfig)}
    if recipe:
        train_options["recipe"] = f"{recipe.name}@{recipe.version}"
    config = TrainConfig(**train_options)
    data = load_dataset(config.dataset, config.data_dir, config.image_size, not args.no_verify)
    torch.manual_seed(config.seed)
    model = VAE(data.shape, **model_options)
    run_dir = Path(
        broadcast(
            args.run_dir or f"runs/{Path(config.dataset).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    )
    if progress:
        summary = data.summary()
        print(
            f"vaekit: {summary['name']} {tuple(summary['shape'])}: {summary['train_examples']} "
            f"train / {summary['test_examples']} test examples -> {run_dir}"
        )
        if model.config.likelihood == "gaussian" and data.is_image and on_8bit_levels(data.train_x):
            print(
                "vaekit: note: a Gaussian likelihood of 8-bit images is a density, not comparable "
                "with discrete log-likelihoods (and unbounded with --learn-scale where pixels "
                "never change); --likelihood discretized-logistic gives probabilities, bits/dim"
            )
    start = time.perf_counter()
    history = fit(model, data, config, run_dir, progress=progress)
    if rank == 0:
        world = f" on {rank_and_size()[1]} ranks" if distributed else ""
        _report(run_dir, history, time.perf_counter() - start, world)
    return 0


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
    print(
        f"held-out ELBO {last['test_elbo']:.2f} ± {last['test_elbo_stderr']:.2f} nats/example "
        f"(reconstruction {last['test_reconstruction']:.2f}, KL {last['test_rate']:.2f}) after "
        f"{epochs}; {seconds:.1f} s{where}; run: {run_dir}"
    )


def _model_and_examples(args: argparse.Namespace, split: str) -> tuple[VAE, torch.Tensor, Any]:
    """The model of ``args.run`` and the ``split`` of the dataset named on the command line
    (else the run's own), as the model is evaluated on them (see ``protocol_examples``)."""
    model = load(args.run)
    run = Path(args.run)
    if args.dataset:
        name, data_dir, image_size = args.dataset, args.data_dir, args.image_size
    elif run.is_dir():
        _, config, _ = read_config(run)
        name, data_dir, image_size = (
            config.dataset,
            args.data_dir or config.data_dir,
            config.image_size,
        )
    else:
        raise ConfigError(f"{run} is a weights file: name the data with --dataset")
    try:
        data = load_dataset(name, data_dir, image_size, not args.no_verify)
    except DataError as err:
        if args.dataset:
            raise
        raise DataError(f"{err} (the run's data; name them with --dataset)") from None
    if data.shape != model.input_shape:
        raise ConfigError(
            f"the data's examples have shape {data.shape} but the model expects {model.input_shape}"
        )
    x, y = protocol_examples(data, split, model.config.likelihood)
    return model, x, y


def _check_output(path: str, suffixes: tuple[str, ...]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"output {path!r} must end in {' or '.join(suffixes)}")
    if not out.parent.exists():
        raise ConfigError(f"output folder {out.parent} does not exist; create it first")
    return out


def cmd_sample(args: argparse.Namespace) -> int:
    if args.n <= 0 or args.temperature < 0:
        raise ConfigError("-n must be positive and --temperature non-negative")
    out = _check_output(args.output, (".png", ".npy"))
    model = load(args.run)
    generator = torch.Generator().manual_seed(args.seed)
    x = model.sample(args.n, args.temperature, mean=not args.draw, generator=generator)
    what = "draws from p(x|z)" if args.draw else "means of p(x|z)"
    if out.suffix == ".npy":
        np.save(out, x.numpy())
    else:
        save_examples(x, out, title=f"samples (T={args.temperature}, {what})")
    print(f"wrote {args.n} samples ({what}, temperature {args.temperature}) to {out}")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    if args.n <= 0:
        raise ConfigError("-n must be positive")
    out = _check_output(args.output, (".png",))
    model, x, _ = _model_and_examples(args, "test")
    x = x[: args.n]
    save_reconstructions(model, x, out)
    print(f"wrote {len(x)} test examples and their reconstructions to {out}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    out = _check_output(args.output, (".npy", ".npz"))
    model, x, y = _model_and_examples(args, args.split)
    generator = torch.Generator().manual_seed(args.seed)
    parts = []
    with torch.no_grad():
        for begin in range(0, len(x), 1000):
            loc, scale = model.posterior_parameters(x[begin : begin + 1000])
            parts.append(
                reparameterise(loc, scale, 1, generator=generator)[0] if args.draw else loc
            )
    z = torch.cat(parts)
    labels = None if y is None else y.numpy()
    if out.suffix == ".npz":
        np.savez(out, z=z.numpy(), **({} if labels is None else {"labels": labels}))
    else:
        np.save(out, z.numpy())
        if labels is not None:
            np.save(out.with_suffix(".labels.npy"), labels)
    note = "" if labels is None else " with labels"
    what = "draws z ~ q(z|x)" if args.draw else "means"
    print(f"wrote latent {what} {tuple(z.shape)} of the {args.split} split{note} to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise ConfigError("--limit must be positive")
    csv_path = _check_output(args.per_example, (".csv",)) if args.per_example else None
    model, x, y = _model_and_examples(args, args.split)
    if args.limit is not None:
        x, y = x[: args.limit], None if y is None else y[: args.limit]
    result = evaluate(
        model, x, args.k, k_sweep=args.k_sweep, seed=args.seed, progress=not args.no_progress
    )
    run = Path(args.run)
    result.info = {
        "run": str(run),
        "dataset": args.dataset or "the run's",
        "split": args.split,
        "binarized": "fixed seed" if model.config.likelihood == "bernoulli" else "no",
    }
    # the files first: minutes of evaluation survive a closed pipe (vaekit evaluate ... | head)
    written = []
    if run.is_dir():
        result.save(run / "evaluation.json")
        written.append(f"wrote {run / 'evaluation.json'}")
    if csv_path is not None:
        result.save_per_example(csv_path, y)
        written.append(f"wrote per-example terms to {csv_path}")
    print("\n".join([result.table(), *written]))
    return 0


def cmd_identity(args: argparse.Namespace) -> int:
    from vaekit.evaluation.identity import fit_linear_gaussian, identity_check

    name = args.dataset or "digits"
    data = load_dataset(name, args.data_dir, args.image_size, not args.no_verify)
    if not 0 < args.latent_dim < math.prod(data.shape):
        raise ConfigError(f"--latent-dim must be between 1 and {math.prod(data.shape) - 1}")
    if args.epochs <= 0 or min(args.k) <= 0:
        raise ConfigError("--epochs and every -k must be positive")
    model = fit_linear_gaussian(data, args.latent_dim, args.epochs, args.seed)
    print(f"{name}: {len(data.test_x)} held-out examples")
    print(identity_check(model, data.test_x, tuple(args.k), args.seed).table())
    return 0


def _run_dir(path: str) -> Path:
    run = Path(path)
    if not (run / "config.json").is_file():
        raise ConfigError(f"{run} is not a run directory (no config.json)")
    return run


def cmd_report(args: argparse.Namespace) -> int:
    from vaekit.visuals.report import build_report

    if args.k <= 0 or args.limit < 0:
        raise ConfigError("-k must be positive and --limit non-negative")
    path = build_report(_run_dir(args.run), args.k, args.limit or None, args.data_dir)
    print(f"wrote {path}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from vaekit.visuals.report import plot

    run = _run_dir(args.run)
    out = _check_output(args.output or str(run / f"{args.what}.png"), (".png",))
    atomic_write_bytes(out, plot(run, args.what, args.data_dir))
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except VaekitError as err:
        if args.debug:
            raise
        print(f"vaekit: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader of stdout went away (| head): no traceback; silence the final flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(
            "vaekit: interrupted; the last checkpoint is intact (continue with "
            "'vaekit train --resume RUN')",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
