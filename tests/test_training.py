"""Training: it learns, it saves and loads exactly, it resumes the same run, it stops on NaN."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import vaekit
from vaekit.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from vaekit.files import run_lock
from vaekit.training.config import TrainConfig
from vaekit.training.run_dir import CHECKPOINT, WEIGHTS
from vaekit.training.schedule import kl_weight, learning_rate
from vaekit.training.trainer import COMPILE_MIN_STEPS, ISOLATES_RECOMPILES, Trainer


def _model(data: vaekit.Dataset, seed: int = 0) -> vaekit.VAE:
    torch.manual_seed(seed)
    return vaekit.VAE(data.shape, latent_dim=4, hidden=[32])


def test_short_training_raises_held_out_elbo(digits: vaekit.Dataset) -> None:
    history = vaekit.fit(_model(digits), digits, epochs=15, progress=False)
    first, last = history[0], history[-1]
    gain = last["test_elbo"] - first["test_elbo"]
    assert gain > 5 * math.hypot(first["test_elbo_stderr"], last["test_elbo_stderr"])
    for record in history:  # every term reported, per example, consistent
        assert record["test_elbo"] == pytest.approx(
            record["test_reconstruction"] - record["test_rate"], abs=1e-6
        )


def test_save_and_load_round_trip_exactly(trained_run: Path, digits: vaekit.Dataset) -> None:
    model = vaekit.load(trained_run)
    weights = load_file(trained_run / WEIGHTS)
    assert set(weights) == set(model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    alone = vaekit.load(trained_run / WEIGHTS)  # the weights file alone rebuilds the model
    x = digits.test_x[:10]
    assert torch.equal(alone.encode(x).mean, model.encode(x).mean)
    assert torch.equal(alone.reconstruct(x), model.reconstruct(x))
    for name in ("config.json", "metrics.jsonl", "samples.png", "reconstructions.png", CHECKPOINT):
        assert (trained_run / name).is_file()
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_continues_the_same_run(tmp_path: Path, digits: vaekit.Dataset) -> None:
    whole = _model(digits)
    vaekit.fit(whole, digits, run_dir=tmp_path / "whole", epochs=4, progress=False)
    vaekit.fit(_model(digits), digits, run_dir=tmp_path / "split", epochs=2, progress=False)
    resumed, _ = vaekit.resume(tmp_path / "split", epochs=4, progress=False)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    def metrics(run: str) -> list[dict]:
        rows = [
            json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        ]
        return [
            {
                k: v
                for k, v in r.items()
                if "time" not in k and "per_s" not in k and k != "elapsed_s"
            }
            for r in rows
        ]

    assert metrics("whole") == metrics("split")


def test_new_run_never_overwrites_an_old_one(trained_run: Path, digits: vaekit.Dataset) -> None:
    before = (trained_run / WEIGHTS).read_bytes()
    with pytest.raises(ConfigError, match="--resume"):
        vaekit.fit(_model(digits), digits, run_dir=trained_run, epochs=1, progress=False)
    assert (trained_run / WEIGHTS).read_bytes() == before


def test_second_writer_is_locked_out(tmp_path: Path) -> None:
    with run_lock(tmp_path), pytest.raises(CheckpointError, match="in use"), run_lock(tmp_path):
        pass
    (tmp_path / ".lock").write_text("999999999")  # a dead owner's lock is taken over
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} on ")
    assert not (tmp_path / ".lock").exists()


def test_nan_stops_training_naming_the_term_and_keeps_checkpoint(
    tmp_path: Path, digits: vaekit.Dataset
) -> None:
    model = _model(digits)
    calls = {"n": 0}
    steps_per_epoch = math.ceil(len(digits.train_x) / 128)

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * math.nan if calls["n"] > 2 * steps_per_epoch + 3 else output

    model.decoder.register_forward_hook(poison)
    with pytest.raises(
        TrainingDiverged, match=r"reconstruction term became nan at epoch 3, step \d"
    ):
        vaekit.fit(model, digits, run_dir=tmp_path / "run", epochs=5, progress=False)
    good = vaekit.load(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in good.parameters())
    state = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert state["epoch"] == 2


def test_nan_is_located_at_its_step_past_the_first_check(digits: vaekit.Dataset) -> None:
    """Checks run every 50 steps on the steps since the last one: a NaN at step 75 of 102 is
    reported as step 75."""
    model = _model(digits)
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * math.nan if calls["n"] == 75 else output

    model.decoder.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"became nan at epoch 1, step 75;"):
        vaekit.fit(model, digits, epochs=1, batch_size=16, progress=False)


def test_bernoulli_likelihood_refuses_grey_levels(digits: vaekit.Dataset) -> None:
    with pytest.raises(DataError, match="--binarize dynamic"):
        vaekit.fit(_model(digits), digits, epochs=1, binarize="none", progress=False)
    gaussian = vaekit.VAE(digits.shape, 4, hidden=[16], likelihood="gaussian", learn_scale=True)
    history = vaekit.fit(gaussian, digits, epochs=2, progress=False)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] - 1  # runs, finite
    with pytest.raises(ConfigError, match="bernoulli only"):
        vaekit.fit(gaussian, digits, epochs=1, binarize="dynamic", progress=False)


def test_custom_networks_train_and_reload(tmp_path: Path, digits: vaekit.Dataset) -> None:
    def networks() -> dict[str, torch.nn.Module]:
        return {
            "encoder": torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 6)),
            "decoder": torch.nn.Sequential(
                torch.nn.Linear(3, 64), torch.nn.Unflatten(1, (1, 8, 8))
            ),
        }

    model = vaekit.VAE(digits.shape, 3, **networks())
    vaekit.fit(model, digits, run_dir=tmp_path / "custom", epochs=1, progress=False)
    with pytest.raises(CheckpointError, match="encoder="):
        vaekit.load(tmp_path / "custom")
    again = vaekit.load(tmp_path / "custom", **networks())
    assert torch.equal(again.decoder[0].weight, model.decoder[0].weight)


def test_schedules() -> None:
    config = TrainConfig(
        epochs=10, lr=1e-3, lr_final=1e-5, lr_schedule="exponential", warmup_epochs=2, beta=0.5
    )
    assert learning_rate(config, 0) == pytest.approx(1e-3)
    assert learning_rate(config, 5) == pytest.approx(1e-4)
    cosine = TrainConfig(epochs=10, lr_schedule="cosine", lr=1e-3, lr_final=0.0 + 1e-4)
    assert learning_rate(cosine, 5) == pytest.approx((1e-3 + 1e-4) / 2)
    assert [kl_weight(config, t, 10) for t in (0, 10, 20, 50)] == [0.0, 0.25, 0.5, 0.5]


@pytest.mark.parametrize(
    "options",
    [
        {"epochs": 0},
        {"batch_size": -1},
        {"lr": float("nan")},
        {"beta": -1.0},
        {"lr_schedule": "linear"},
        {"binarize": "sometimes"},
    ],
)
def test_nonsense_training_options(options: dict) -> None:
    with pytest.raises(ConfigError):
        TrainConfig(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"latent_dim": 0},
        {"hidden": [-5]},
        {"network": "transformer"},
        {"likelihood": "poisson"},
        {"network": "conv", "input_shape": (1, 9, 9)},
        {"network": "conv", "input_shape": (64,)},
    ],
)
def test_nonsense_model_options(options: dict) -> None:
    kwargs = {"input_shape": (1, 8, 8), **options}
    with pytest.raises(ConfigError):
        vaekit.VAE(kwargs.pop("input_shape"), **kwargs)


def test_conv_network_trains_on_28x28(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(64, 1, 28, 28, generator=generator) > 0.7).float()
    data = vaekit.Dataset("toy", x[:48], x[48:])
    model = vaekit.VAE(data.shape, 4, network="conv", hidden=[32])
    history = vaekit.fit(model, data, epochs=2, batch_size=16, progress=False)
    assert math.isfinite(history[-1]["test_elbo"])
    assert model.sample(3).shape == (3, 1, 28, 28)


def test_gated_layers_are_glu_of_one_linear_map() -> None:
    """--activation glu: h = (W x + b) ⊙ sigmoid(V x + c), the linear map computing both
    halves (Tomczak & Welling's GatedDense); refused for conv networks."""
    model = vaekit.VAE((6,), 2, hidden=[5], activation="glu")
    first = model.encoder.layers[0]
    x = torch.randn(3, 6)
    a, b = (x @ first.weight.T + first.bias).chunk(2, dim=-1)
    torch.testing.assert_close(model.encoder.layers[1](first(x)), a * torch.sigmoid(b))
    assert first.out_features == 10 and model.encoder(x).shape == (3, 4)
    with pytest.raises(ConfigError, match="glu gates dense layers"):
        vaekit.VAE((1, 28, 28), 2, network="conv", hidden=[8], activation="glu")


def test_iwae_objective_trains_and_reports_elbo_terms(digits: vaekit.Dataset) -> None:
    from vaekit.recipes import load_recipe

    history = vaekit.fit(
        _model(digits), digits, epochs=3, objective="iwae", samples=5, progress=False
    )
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]
    with pytest.raises(ConfigError, match=r"IWAE .* use --beta 1 \(not 0.5\)$"):
        vaekit.fit(_model(digits), digits, epochs=1, objective="iwae", beta=0.5, progress=False)
    # a recipe's warm-up is named with its value, so the user sees what to set
    with pytest.raises(ConfigError, match=r"use --warmup-epochs 0 \(not 10\), --free-bits 0"):
        TrainConfig(**{**load_recipe("fast").train, "objective": "iwae", "free_bits": 0.5})


def test_burda_schedule_and_recipes() -> None:
    from vaekit.recipes import available, load_recipe
    from vaekit.training.schedule import burda_stage

    assert [burda_stage(e) for e in (0, 1, 3, 4, 12, 13, 3279)] == [0, 1, 1, 2, 2, 3, 7]
    config = TrainConfig(lr_schedule="burda", epochs=3280)
    assert learning_rate(config, 3279) == pytest.approx(1e-3 * 10 ** (-1))
    assert {"burda-vae", "burda-iwae-k5", "burda-iwae-k50"} <= set(available())
    recipe = load_recipe("burda-vae")
    assert recipe.train["epochs"] == sum(3**i for i in range(8)) == 3280
    with pytest.raises(ConfigError, match="unknown recipe"):
        load_recipe("nope")


def test_glorot_init_and_output_bias(digits: vaekit.Dataset) -> None:
    torch.manual_seed(0)
    model = vaekit.VAE(digits.shape, 4, hidden=[16, 16], activation="tanh", init="glorot")
    assert all(
        float(m.bias.detach().abs().max()) == 0
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    )
    trainer = Trainer(model, digits, TrainConfig(output_bias=True), progress=False)
    mean = digits.train_x.mean(0).flatten().clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(trainer.model.decoder.layers[-1].bias, torch.logit(mean))


def test_compiled_objective_equals_eager(digits: vaekit.Dataset) -> None:
    """``compile="on"`` computes the same loss, term sums and gradients as the eager step, to
    float32 round-off (relative 1e-5 for sums of ~10³ terms of similar size)."""
    model = _model(digits)
    x = digits.train_x[:64].bernoulli(generator=torch.Generator().manual_seed(0))
    noise = torch.randn(1, 64, 4, generator=torch.Generator().manual_seed(1))
    results = []
    for compile in ("off", "on"):
        trainer = Trainer(model, digits, TrainConfig(compile=compile), progress=False)
        trainer._compile_if_worth_it(steps_ahead=1)
        assert (trainer.step_module is not trainer.eager_module) == (compile == "on")
        model.zero_grad()
        loss, sums = trainer._objective(x, noise, 1.0, 64)
        loss.backward()
        results.append((loss, sums, [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_sums, eager_grads), (loss, sums, grads) = results
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(sums, eager_sums, rtol=1e-5, atol=0)
    for grad, eager in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(grad, eager, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("setting", "steps_ahead", "compiled"),
    [
        ("auto", COMPILE_MIN_STEPS - 1, False),
        ("auto", COMPILE_MIN_STEPS, True),
        ("off", 10**9, False),
        ("on", 1, True),
    ],
)
def test_compile_setting(
    digits: vaekit.Dataset, setting: str, steps_ahead: int, compiled: bool
) -> None:
    """``auto`` compiles only runs long enough to repay the start-up; on/off are obeyed."""
    trainer = Trainer(_model(digits), digits, TrainConfig(compile=setting), progress=False)
    trainer._compile_if_worth_it(steps_ahead)
    assert (trainer.step_module is not trainer.eager_module) == compiled


@pytest.mark.skipif(not ISOLATES_RECOMPILES, reason="this torch has no isolate_recompiles")
def test_each_trainer_compiles_within_a_budget_of_its_own(
    digits: vaekit.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every trainer compiles the same code, and torch keeps a limited number of compiled
    versions of a code object per process: with that limit at 1, a second model of other
    shapes is still compiled (a new graph), not run eager."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    x = digits.train_x[:16].bernoulli(generator=torch.Generator().manual_seed(0))
    for latent in (2, 3):
        model = vaekit.VAE(digits.shape, latent, hidden=[8])
        trainer = Trainer(model, digits, TrainConfig(compile="on"), progress=False)
        trainer._compile_if_worth_it(steps_ahead=1)
        graphs = counters["stats"]["unique_graphs"]
        trainer._objective(x, torch.randn(1, 16, latent), 1.0, 16)
        assert counters["stats"]["unique_graphs"] == graphs + 1


def test_compile_flag_of_older_configs_is_read() -> None:
    """config.json files written before ``compile`` had three settings stored a boolean, false
    by default: it now means the default, ``auto``."""
    assert TrainConfig.from_dict({"compile": True}).compile == "on"
    assert TrainConfig.from_dict({"compile": False}).compile == "auto"
    with pytest.raises(ConfigError, match="compile"):
        TrainConfig(compile="sometimes")


def _failing_compile(message: str) -> Callable[..., Any]:
    """A stand-in for torch.compile on a machine where compiling fails at the first call,
    raising ``message``."""
    from torch._dynamo.exc import TorchDynamoException

    def compile(module: torch.nn.Module, **options: Any) -> Callable[..., Any]:
        def compiled(*args: Any) -> Any:
            raise TorchDynamoException(message)

        return compiled

    return compile


def test_failed_compile_falls_back_or_stops_with_one_line(
    digits: vaekit.Dataset, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``auto`` trains on without torch.compile when it fails, saying so in one line; ``on``
    stops with one clear error."""
    import vaekit.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "COMPILE_MIN_STEPS", 1)
    monkeypatch.setattr(
        trainer_module.torch, "compile", _failing_compile("C++ compile error\nlong output")
    )
    history = vaekit.fit(_model(digits), digits, epochs=2, progress=False)
    assert len(history) == 2 and math.isfinite(history[-1]["test_elbo"])
    assert "vaekit: torch.compile failed (C++ compile error); training without it" in (
        capsys.readouterr().out
    )
    with pytest.raises(
        ConfigError,
        match=r"^torch.compile failed \(C\+\+ compile error\); "
        r"train \(or resume\) with --compile off$",
    ):
        vaekit.fit(_model(digits), digits, epochs=1, compile="on", progress=False)


def test_failed_compile_quotes_the_cause_after_a_lead_in(
    digits: vaekit.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch 2.11's inductor failed on an H200 with a first line that names no cause; the
    one-line error quotes the line after it (the message as torch wrote it, shortened)."""
    import vaekit.training.trainer as trainer_module

    message = (
        "backend='inductor' raised:\nRuntimeError: Argument 'scale' of Node 'mul' was used "
        "before it has been defined!\n\ngraph():\n    %scale : ..."
    )
    monkeypatch.setattr(trainer_module.torch, "compile", _failing_compile(message))
    with pytest.raises(
        ConfigError,
        match=r"^torch.compile failed \(backend='inductor' raised: RuntimeError: Argument "
        r"'scale' of Node 'mul' was used before it has been defined!\); "
        r"train \(or resume\) with --compile off$",
    ):
        vaekit.fit(_model(digits), digits, epochs=1, compile="on", progress=False)


def test_gradient_clipping_counts_its_steps_and_leaves_small_gradients(
    digits: vaekit.Dataset,
) -> None:
    """A limit under every gradient's norm clips every step (counted per epoch) and changes
    the run; a limit over every norm leaves the run bit for bit as without clipping."""

    def run(clip: float) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = vaekit.VAE(digits.shape, 4, hidden=[16])
        history = vaekit.fit(model, digits, epochs=2, clip_grad_norm=clip, progress=False)
        return history, model.state_dict()

    steps = math.ceil(len(digits.train_x) / TrainConfig().batch_size)
    plain_history, plain = run(0.0)
    tiny_history, tiny = run(1e-3)
    huge_history, huge = run(1e9)
    assert "clipped_steps" not in plain_history[-1]
    assert [r["clipped_steps"] for r in tiny_history] == [steps, steps]
    assert [r["clipped_steps"] for r in huge_history] == [0, 0]
    assert all(torch.equal(plain[k], huge[k]) for k in plain)
    assert not all(torch.equal(plain[k], tiny[k]) for k in plain)
