"""The latent-variable contract: rate rules (closed form, Monte Carlo, most-specific
dispatch), the mixture-of-Gaussians prior (the worked example of docs/architecture.md) end to
end, registries, labels carried by the trainer, format-1 runs evaluating as before, and the
package's layering (no import cycles).

Tolerances: 5 standard errors of a Monte Carlo mean (a false failure below 1e-6 per value);
float64 round-off for exact identities; 1e-6 nats for the format-1 numbers, computed in
float64 by vaekit 0.1 (commit 9bfbe63) with tests/data/format1_reference.json's script."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaekit
from vaekit.cli import main
from vaekit.data import Batch
from vaekit.errors import CheckpointError, ConfigError
from vaekit.model import (
    PRIORS,
    DiagonalGaussianPosterior,
    ModelConfig,
    Prior,
    RateRule,
    StandardNormalPrior,
    register_rate,
)
from vaekit.model.gaussian import kl_to_standard, standard_log_density
from vaekit.model.priors.mixture import MixtureOfGaussiansPrior, MixtureOptions

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
Z_TOL = 5.0


def _within(estimates: torch.Tensor, truth: torch.Tensor) -> None:
    """``estimates`` (N, ...): independent draws whose mean estimates ``truth``."""
    mean, stderr = estimates.mean(0), estimates.std(0) / estimates.shape[0] ** 0.5
    assert torch.all((mean - truth).abs() <= Z_TOL * stderr + 1e-12), (mean, truth, stderr)


class _PlainNormal(Prior):
    """N(0, I) without a registered KL rule: the Monte Carlo rate serves it."""

    def __init__(self, latent_dim: int, options: object = None) -> None:
        super().__init__()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return standard_log_density(z)


def test_monte_carlo_rate_agrees_with_the_closed_form() -> None:
    torch.manual_seed(0)
    posterior = DiagonalGaussianPosterior(3)
    params = (torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.3)
    closed = RateRule(posterior, StandardNormalPrior(3))
    monte_carlo = RateRule(posterior, _PlainNormal(3))
    assert closed.analytic and closed.label == "analytic"
    assert not monte_carlo.analytic and monte_carlo.label == "Monte Carlo"
    torch.testing.assert_close(closed(params), kl_to_standard(*params))
    noise = torch.randn(100_000, 4, 3, dtype=torch.float64)
    z, log_q = posterior.sample_and_log_prob(params, noise)
    per_draw = log_q - standard_log_density(z)  # the Monte Carlo rate of one draw each
    _within(per_draw, closed(params))
    torch.testing.assert_close(
        monte_carlo(params, log_q, standard_log_density(z)), per_draw.mean(0)
    )
    # log q(z|x) from the noise is the density of z
    torch.testing.assert_close(log_q, posterior.log_prob(params, z))


def test_most_specific_rule_wins_and_ties_are_refused() -> None:
    class Narrower(StandardNormalPrior):
        pass

    class Other(StandardNormalPrior):
        pass

    posterior = DiagonalGaussianPosterior(2)
    params = (torch.zeros(1, 2), torch.ones(1, 2))
    inherited = RateRule(posterior, Narrower(2))
    assert inherited.analytic  # the parent's rule serves a subclass

    @register_rate(DiagonalGaussianPosterior, Narrower)
    def _ten(posterior: object, prior: object, params: tuple) -> torch.Tensor:
        return torch.full_like(params[0], 5.0)

    assert float(RateRule(posterior, Narrower(2))(params)) == 10.0
    assert float(RateRule(posterior, Other(2))(params)) == 0.0

    class NarrowerPosterior(DiagonalGaussianPosterior):
        pass

    @register_rate(NarrowerPosterior, StandardNormalPrior)
    def _posterior_side(posterior: object, prior: object, params: tuple) -> torch.Tensor:
        return torch.ones_like(params[0])

    # (NarrowerPosterior, StandardNormal) and (DiagonalGaussian, Narrower) are each more
    # specific on one side: neither wins
    with pytest.raises(TypeError, match="ambiguous"):
        RateRule(NarrowerPosterior(2), Narrower(2))


def _mixture(dtype: torch.dtype = torch.float64) -> MixtureOfGaussiansPrior:
    torch.manual_seed(1)
    prior = MixtureOfGaussiansPrior(2, MixtureOptions(components=3)).to(dtype)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -0.5]))
        prior.loc.mul_(3)
        prior.log_scale.copy_(torch.randn(3, 2) * 0.3)
    return prior


def _reference(prior: MixtureOfGaussiansPrior, temperature: float = 1.0) -> MixtureSameFamily:
    scale = temperature * prior.log_scale.exp()
    return MixtureSameFamily(
        Categorical(logits=prior.logits), Independent(Normal(prior.loc, scale), 1)
    )


def test_mixture_prior_density_and_draws() -> None:
    """log_prob equals torch.distributions' mixture (float64 round-off); draws have the
    mixture's mean and second moments (5 s.e.), at T = 1 and 0.5; T = 0 draws the means."""
    prior = _mixture()
    z = torch.randn(7, 5, 2, dtype=torch.float64) * 3
    with torch.no_grad():
        torch.testing.assert_close(prior.log_prob(z), _reference(prior).log_prob(z))
    for temperature in (1.0, 0.5):
        reference = _reference(prior, temperature)
        draws = prior.sample(200_000, temperature, torch.Generator().manual_seed(2))
        _within(draws, reference.mean.detach())
        second = reference.variance.detach() + reference.mean.detach() ** 2
        _within(draws**2, second)
    at_zero = prior.sample(50, 0.0, torch.Generator().manual_seed(3))
    assert all(any(torch.equal(row, mean) for mean in prior.loc) for row in at_zero)


LEARNED_PRIORS = {
    # name: (its options on the command line, the saved config, a parameter it learns)
    "mog": (["--components", "4"], {"name": "mog", "components": 4}, "prior.logits"),
    "vamp": (
        ["--pseudo-inputs", "6"],
        {"name": "vamp", "pseudo_inputs": 6},
        "prior.pseudo_inputs",
    ),
}


@pytest.mark.parametrize("prior", sorted(LEARNED_PRIORS))
def test_learned_priors_train_evaluate_and_report_through_the_cli(
    prior: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vaekit train --prior mog|vamp``: the prior's parameters are learned and saved; the
    rate is the Monte Carlo one, labelled so; evaluate, report, sample, plot and resume work."""
    options, saved_prior, learned = LEARNED_PRIORS[prior]
    run = tmp_path / prior
    argv = ["train", "--prior", prior, *options, "--latent-dim", "3", "--hidden", "32"]
    argv += ["--epochs", "3", "--run-dir", str(run), "--no-progress", "--seed", "1"]
    assert main(argv) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["vaekit_format"] == 2
    assert saved["model"]["prior"] == saved_prior
    model = vaekit.load(run)
    assert isinstance(model.prior, PRIORS[prior].builder) and not model.rate_rule.analytic
    torch.manual_seed(1)
    fresh = vaekit.VAE.from_config(model.config)  # the weights the run started from
    trained_value, start = model.state_dict()[learned], fresh.state_dict()[learned]
    assert (trained_value - start).abs().max() > 1e-3  # it was trained
    assert main(["evaluate", str(run), "-k", "20", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "rate (KL to p(z))" in table and "(Monte Carlo, K draws)" in table
    assert "KL per dimension" not in table and "rate = I_q(x;z)" in table
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["rate_estimator"] == "Monte Carlo" and evaluation["kl_per_dim"] == []
    assert math.isclose(
        evaluation["elbo"]["value"],
        evaluation["reconstruction"]["value"] - evaluation["rate"]["value"],
        abs_tol=1e-9,
    )
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Monte Carlo" in page and "does not factorise" in page
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    assert main(["plot", str(run), "--what", "traverse", "-o", str(tmp_path / "t.png")]) == 0
    capsys.readouterr()
    assert main(["plot", str(run), "--what", "kl"]) == 2
    assert "does not factorise" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_sampling_goes_through_the_prior() -> None:
    """``VAE.sample`` draws z from the model's prior (its temperature), not N(0, T² I)."""
    model = vaekit.VAE((3,), 2, hidden=[4], likelihood="gaussian", prior="mog", components=2)
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    model.sample(5, temperature=0.0, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(z, mean) for mean in model.prior.loc) for z in seen[0])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prior": "hyperbolic"}, "unknown prior 'hyperbolic': use one of"),
        ({"posterior": "flow"}, "unknown posterior 'flow': use one of diagonal-gaussian"),
        ({"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
        ({"network": "resnet"}, "unknown network 'resnet'"),
        ({"model": "ladder"}, "unknown model 'ladder'"),
        ({"components": 3}, "--components goes with --prior mog"),
        ({"frobnicate": 1}, "unknown model option 'frobnicate'"),
    ],
)
def test_unknown_names_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vaekit.VAE((4,), 2, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "vimco"}, "objective must be one of elbo, iwae"),
        ({"lr_schedule": "cyclic"}, "lr_schedule must be one of constant"),
        ({"binarize": "sometimes"}, "binarize must be one of dynamic, none"),
    ],
)
def test_unknown_training_names_are_one_clear_error(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        vaekit.TrainConfig(**options)


def test_the_command_line_is_generated_from_the_registries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for entry in PRIORS:
        assert entry.name in text
    assert "--components" in text and "(--prior mog)" in text
    assert "--pseudo-inputs" in text and "(--prior vamp)" in text
    assert "--lr-schedule {constant,cosine,exponential,burda}" in text


def test_a_config_naming_an_unknown_component_is_one_line(
    tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.safetensors"):
        (run / name).write_bytes((trained_run / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    config["model"]["prior"] = {"name": "hyperbolic", "curvature": 1}  # from a newer vaekit
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown prior 'hyperbolic'"):
        vaekit.load(run)
    config["model"]["prior"] = {"name": "mog", "components": 3, "learned": True}
    (run / "config.json").write_text(json.dumps(config))
    assert main(["sample", str(run), "-o", str(tmp_path / "s.png")]) == 2
    assert "mog takes no option learned" in capsys.readouterr().err


def test_config_round_trips_and_flat_options_route_to_their_component() -> None:
    config = ModelConfig.from_options(
        (1, 8, 8), 4, hidden=[16], likelihood="gaussian", learn_scale=True, prior="mog"
    )
    assert config.likelihood.options.learn_scale and config.prior.options.components == 10
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_options((1, 8, 8), 4, **config.flat_options()) == config


class _LabelledVAE(vaekit.VAE):
    """A model that reads the labels: it checks that each example arrives with its own label
    (the data put the label in x's first value) and counts the examples it saw."""

    uses_labels = True

    def posterior_parameters(self, batch: torch.Tensor | Batch) -> tuple:
        assert isinstance(batch, Batch) and batch.y is not None
        assert torch.equal((batch.x[:, 0] * 10).round().long(), batch.y)
        self.seen = getattr(self, "seen", 0) + len(batch.y)
        return super().posterior_parameters(batch)


def test_the_trainer_carries_labels_to_a_model_that_reads_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    y = torch.randint(0, 10, (300,))
    x = torch.cat([y[:, None] / 10, torch.randn(300, 3)], 1)
    data = vaekit.Dataset("labelled", x[:250], x[250:], y[:250], y[250:])
    model = _LabelledVAE((4,), 2, hidden=[8], likelihood="gaussian")
    vaekit.fit(model, data, epochs=2, batch_size=32, run_dir=tmp_path / "run", progress=False)
    assert model.seen == 2 * 250 + 2 * 50 + 32  # training, held-out passes, figures
    result = vaekit.evaluate(model, data, k=4)
    assert result.n == 50
    unlabelled = vaekit.Dataset("unlabelled", x[:250], x[250:])
    with pytest.raises(ConfigError, match="no labels"):
        vaekit.fit(_LabelledVAE((4,), 2, hidden=[8], likelihood="gaussian"), unlabelled)


def _reference_examples(model: torch.nn.Module) -> torch.Tensor:
    """The examples of tests/data/format1_reference.json: the first 200 scikit-learn digits,
    as 28x28 images (bilinear) for MNIST models, binarised (seed 0) under a Bernoulli."""
    digits = torch.tensor(load_digits().images[:200], dtype=torch.float64) / 16
    if model.input_shape == (1, 28, 28):
        x = F.interpolate(digits[:, None], size=(28, 28), mode="bilinear", align_corners=False)
        return torch.bernoulli(x.clamp(0, 1), generator=torch.Generator().manual_seed(0))
    x = digits.reshape(200, *model.input_shape)
    if model.config.likelihood.name == "bernoulli":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    return x


@pytest.mark.parametrize(
    "run",
    json.loads((DATA / "format1_reference.json").read_text()),
)
def test_format_1_runs_evaluate_as_before(run: str) -> None:
    """The shipped models and format-1 user runs (conv + learned Gaussian scale, decoded
    scale, IWAE-trained) load and give vaekit 0.1's numbers: same seed, 200 examples, K = 100,
    float64, equal to 1e-6 nats."""
    reference = json.loads((DATA / "format1_reference.json").read_text())[run]
    path = ROOT / run
    assert json.loads((path / "config.json").read_text())["vaekit_format"] == 1
    model = vaekit.load(path).double()
    result = vaekit.evaluate(model, _reference_examples(model), 100, seed=0)
    for name in ("elbo", "reconstruction", "rate", "log_px"):
        assert abs(float(result.per_example[name].mean()) - reference[name]) < 1e-6, name
    first = result.per_example["log_px"][:5].tolist()
    assert max(abs(a - b) for a, b in zip(first, reference["first_log_px"], strict=True)) < 1e-6


def _imports(path: Path) -> set[str]:
    """The vaekit modules ``path`` imports at run time (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for node in ast.walk(branch)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaekit"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("vaekit"))
    return found


def _layer(module: str) -> str:
    """The package a module belongs to: ``vaekit.model.priors.mixture`` -> ``vaekit.model``;
    top-level modules are their own layer."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_packages() -> None:
    """The packages form layers (errors, files, registry -> data -> nets -> model ->
    objectives -> evaluation -> visuals -> training -> report, cli): no package imports
    one that imports it back, directly or not. (``vaekit/__init__.py`` is the façade over
    all of them and is left out.)"""
    src = ROOT / "src"
    graph: dict[str, set[str]] = {}
    for path in (src / "vaekit").rglob("*.py"):
        module = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        if module == "vaekit":
            continue
        layer = _layer(module)
        targets = {_layer(m) for m in _imports(path)} - {layer, "vaekit"}
        graph.setdefault(layer, set()).update(targets)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, " -> ".join([*visiting[visiting.index(node) :], node])
        if node in done:
            return
        visiting.append(node)
        for target in sorted(graph.get(node, ())):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_likelihood_names_are_compared_nowhere() -> None:
    """The likelihood owns its data protocol: no code outside it asks which one it is."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in (ROOT / "src" / "vaekit").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(
            f'{op} "{name}"' in line for op in ("==", "!=") for name in ("bernoulli", "gaussian")
        )
    ]
    assert not offenders, offenders
