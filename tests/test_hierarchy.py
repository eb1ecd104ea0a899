"""Hierarchies of latent layers against ground truth: the linear-Gaussian hierarchy, whose
log p(x), ELBO and posterior are exact (float64)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import vaekit
from vaekit.cli import main
from vaekit.data.batch import Batch
from vaekit.errors import ConfigError
from vaekit.evaluation import linear_gaussian_hierarchy as lgh
from vaekit.evaluation.identity import identity_check
from vaekit.model import HierarchicalVAE, ModelConfig
from vaekit.objectives.elbo import elbo, elbo_per_layer
from vaekit.objectives.importance import iwae_terms
from vaekit.objectives.training import ELBOObjective
from vaekit.training.config import TrainConfig
from vaekit.training.linear_gaussian import fit_linear_gaussian
from vaekit.training.schedule import layer_kl_weights
from vaekit.visuals.figures import kl_per_dimension_png

Z_TOL = 5.0  # standard errors

SHAPES = [
    ("top-down", [3, 2]),
    ("bottom-up", [3, 2]),
    ("x-and-above", [3, 2]),
    ("top-down", [4, 3, 2]),
    ("bottom-up", [4, 3, 2]),
    ("x-and-above", [4, 3, 2]),
]


def _model(inference: str, sizes: list[int], seed: int = 0) -> HierarchicalVAE:
    """x-and-above inference with the decoder reading every layer (Tomczak & Welling's HVAE);
    the others with the decoder reading z_1."""
    torch.manual_seed(seed)
    reads = "all" if inference == "x-and-above" else "bottom"
    return lgh.linear_gaussian_hierarchy(
        6, sizes, inference, sigma=0.8, decoder_reads=reads
    ).double()


@pytest.mark.parametrize(("inference", "sizes"), SHAPES)
def test_identity_is_exact_and_densities_match_the_joint_gaussians(
    inference: str, sizes: list[int]
) -> None:
    """log p(x) = ELBO + KL(q || p(z|x)) to 1e-10 from the closed forms; the model's own log q
    and log p(z) at its draws equal the joint Gaussians' (read from the weights) to 1e-10."""
    model = _model(inference, sizes)
    x = torch.randn(5, 6, dtype=torch.float64)
    exact = lgh.exact_elbo(model, x)
    kl = lgh.posterior_kl(model, x)
    assert (exact.elbo + kl - lgh.log_px(model, x)).abs().max() < 1e-10
    assert (kl > 0).all()
    params = model.posterior_parameters(x)
    z, log_q = model.sample_posterior(params, torch.randn(7, 5, model.noise_dim).double())
    q, p = lgh.posterior_approximation(model, x), lgh.prior(model)
    assert (log_q - q.log_prob(z)).abs().max() < 1e-10
    assert (model.log_prior(z) - p.log_prob(z)).abs().max() < 1e-10
    assert (model.posterior.log_prob(params, z) - log_q).abs().max() < 1e-10


@pytest.mark.parametrize(("inference", "sizes"), SHAPES[:3])
def test_monte_carlo_terms_converge_to_the_exact_ones(inference: str, sizes: list[int]) -> None:
    """The Monte Carlo ELBO, its rate and the per-layer rates (their sum) are unbiased: within
    5 s.e. of the closed forms over 20,000 draws; the per-layer rates add up to the rate of
    the same draws exactly."""
    model = _model(inference, sizes)
    x = torch.randn(3, 6, dtype=torch.float64)
    exact = lgh.exact_elbo(model, x)
    n = 20_000
    noise = torch.randn(n, 3, model.noise_dim, dtype=torch.float64)
    params = model.posterior_parameters(x)
    z, log_q = model.sample_posterior(params, noise)
    per_draw_rate = log_q - model.log_prior(z)
    log_w = model.log_likelihood(z, x) - per_draw_rate
    for draws, truth in ((log_w, exact.elbo), (per_draw_rate, exact.rate)):
        stderr = draws.std(0) / n**0.5
        assert ((draws.mean(0) - truth).abs() < Z_TOL * stderr).all()
    by_layer = model.rate_per_layer(params, noise)
    assert by_layer.shape == (3, len(sizes))
    torch.testing.assert_close(by_layer.sum(-1), per_draw_rate.mean(0), rtol=0, atol=1e-10)


def _expected_kl_per_dimension(model: HierarchicalVAE, x: torch.Tensor) -> torch.Tensor:
    """E_q[log q(z_{l,d}|·) − log p(z_{l,d}|z_{l+1})] exactly, ``(B, D)``: q is a joint Gaussian
    (mean m, covariance Σ), each p(z_{l,d}|z_{l+1}) = N(w·z_{l+1} + b, s²) with w, b read off
    the linear network, so E_q[(z_{l,d} − w·z_{l+1} − b)²] = (u·m − b)² + uᵀΣu for the vector u
    that picks z_{l,d} − w·z_{l+1}; q's scale given its parents is a constant (the model's)."""
    q = lgh.posterior_approximation(model, x)
    mean, cov = q.mean, q.covariance_matrix
    sizes, total = model.layer_sizes, sum(model.layer_sizes)
    starts = [sum(sizes[:level]) for level in range(len(sizes))]
    params = model.posterior_parameters(x)
    z = mean.unsqueeze(0)
    q_scale = torch.cat(
        [model.posterior._layer(params, model.prior.split(z), level)[1].expand(1, len(x), -1)
         for level in range(len(sizes))], dim=-1,
    )[0]  # fmt: skip
    expected_log_q = -0.5 - q_scale.log() - 0.5 * math.log(2 * math.pi)
    picks = []  # u and b of each dimension, the top layer's against N(0, 1)
    for level, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        above = sizes[level + 1] if level + 1 < len(sizes) else 0
        if above:
            conditional = model.prior.conditionals[level]
            b, s = conditional(torch.zeros(1, above, dtype=x.dtype))
            w = conditional(torch.eye(above, dtype=x.dtype))[0] - b  # (above, size)
        for d in range(size):
            u = torch.zeros(total, dtype=x.dtype)
            u[start + d] = 1.0
            if above:
                u[start + size : start + size + above] = -w[:, d]
            picks.append((u, b[0, d] if above else 0.0, s[0, d] if above else 1.0))
    log_p = [
        -0.5 * math.log(2 * math.pi) - math.log(scale)
        - ((mean @ u - b).square() + torch.einsum("i,bij,j->b", u, cov, u)) / (2 * scale**2)
        for u, b, scale in picks
    ]  # fmt: skip
    return expected_log_q - torch.stack(log_p, dim=-1)


@pytest.mark.parametrize(("inference", "sizes"), SHAPES)
def test_kl_per_dimension_is_unbiased_and_adds_up_to_each_layer(
    inference: str, sizes: list[int]
) -> None:
    """Each dimension's share of the rate: the Monte Carlo terms over 20,000 draws within 5 s.e.
    of the exact expectations (every inference kind: the bottom-up layers' p reads a layer
    drawn after them, which the closed form through the joint Gaussian covers); a layer's
    dimensions add up to its rate from the same draws (1e-10)."""
    model = _model(inference, sizes)
    x = torch.randn(3, 6, dtype=torch.float64)
    n = 20_000
    noise = torch.randn(n, 3, model.noise_dim, dtype=torch.float64)
    params = model.posterior_parameters(x)
    with torch.no_grad():
        per_dim = model.kl_per_dimension(params, noise)
        z, _ = model.posterior.draw_layers(params, noise)
        draws = model.posterior.conditional_log_prob_dims(params, z)
        draws = draws - model.prior.conditional_log_prob_dims(z)
        expected = _expected_kl_per_dimension(model, x)
        by_layer = model.rate_per_layer(params, noise)
    torch.testing.assert_close(per_dim, draws.mean(0), rtol=0, atol=1e-12)
    stderr = draws.std(0) / n**0.5
    assert ((per_dim - expected).abs() < Z_TOL * stderr).all()
    assert per_dim.shape == (3, sum(sizes))
    layer_sums = torch.stack([part.sum(-1) for part in per_dim.split(sizes, -1)], -1)
    torch.testing.assert_close(layer_sums, by_layer, rtol=0, atol=1e-10)


def test_kl_per_dimension_is_undefined_where_the_top_prior_does_not_factorise() -> None:
    """With a mixture on the top layer its dimensions have no share of their own (NaN); the
    layers below keep theirs, adding up to their rates."""
    torch.manual_seed(0)
    model = HierarchicalVAE((6,), 3, model="hierarchy", upper_layers=[2], hidden=[8],
                            layer_hidden=[8], prior="mog").double()  # fmt: skip
    x = torch.randn(4, 6, dtype=torch.float64)
    noise = torch.randn(50, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        params = model.posterior_parameters(x)
        per_dim = model.kl_per_dimension(params, noise)
        by_layer = model.rate_per_layer(params, noise)
    assert per_dim[:, 3:].isnan().all() and not per_dim[:, :3].isnan().any()
    torch.testing.assert_close(per_dim[:, :3].sum(-1), by_layer[:, 0], rtol=0, atol=1e-10)
    values = [*per_dim.mean(0)[:3].tolist(), None, None]  # as evaluation.json keeps them
    png = kl_per_dimension_png(values, [True] * 5, [3, 2])
    assert png.startswith(b"\x89PNG")


def test_fitted_identity_and_importance_sampling_converge(digits: vaekit.Dataset) -> None:
    """`vaekit identity --layers 2`'s check on digits: the identity to 1e-9, the Monte Carlo
    ELBO unbiased, log p̂_K rising with K to the exact log p(x) (5 s.e.); training kept the
    layers linear-Gaussian (the closed forms refuse otherwise)."""
    model = fit_linear_gaussian(digits, latent_dim=4, epochs=30, layers=2)
    assert model.layer_sizes == (4, 2)
    check = identity_check(model, digits.test_x, ks=(1, 1000))
    assert check.residual < 1e-9 and check.elbo <= check.log_px
    assert abs(check.monte_carlo_error.value) < Z_TOL * check.monte_carlo_error.stderr
    (_, _, error_1), (_, _, error_1000) = check.iwae
    assert error_1.value < error_1000.value <= Z_TOL * error_1000.stderr
    assert "hierarchy" in check.table() and "best diagonal" not in check.table()


def test_iwae_bound_and_elbo_run_through_the_contract() -> None:
    """The objectives need nothing of the hierarchy: L_K ≥ the ELBO of the same draws (Jensen,
    per example), gradients reach every network (the encoder, the upward, generative and
    decoder networks)."""
    model = HierarchicalVAE((1, 8, 8), 6, model="hierarchy", upper_layers=[4, 2], hidden=[16])
    x = torch.rand(10, 1, 8, 8).round()
    bound, terms = iwae_terms(model, x, 5)
    assert (bound >= terms.elbo - 1e-5).all()
    (bound.sum() + elbo(model, x, check=False).elbo.sum()).backward()
    for name, parameter in model.named_parameters():
        if name.startswith("prior.top"):
            continue  # N(0, I): nothing to learn
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_sampling_goes_down_the_layers_at_each_temperature() -> None:
    """T = 0 at every layer draws the chain of means; a temperature per layer is taken,
    a wrong count refused."""
    model = HierarchicalVAE((5,), 3, model="hierarchy", upper_layers=[2], likelihood="gaussian")
    generator = torch.Generator().manual_seed(0)
    z = model.prior.sample(4, [0.0, 0.0], generator)
    top = torch.zeros(4, 2)
    assert torch.equal(z[:, 3:], top)
    assert torch.equal(z[:, :3], model.prior.conditionals[0](top)[0])
    assert model.sample(3, temperature=[1.0, 0.0]).shape == (3, 5)
    with pytest.raises(ConfigError, match="one per latent layer"):
        model.sample(2, [1.0, 1.0, 1.0])
    one_layer = vaekit.VAE((5,), 2, likelihood="gaussian")
    draws = [
        one_layer.sample(2, t, generator=torch.Generator().manual_seed(1)) for t in (0.5, [0.5])
    ]
    assert torch.equal(*draws)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"posterior": "iaf"}, "--posterior iaf needs --inference bottom-up or x-and-above"),
        (
            {"posterior": "iaf", "inference": "x-and-above", "prior": "vamp"},
            "the VampPrior needs a posterior whose density is cheap",
        ),
        ({"prior": "vamp", "inference": "bottom-up"}, "bottom-up inference does not have"),
        ({"upper_layers": []}, "at least one upper layer"),
        ({"inference": "sideways"}, "inference must be one of"),
    ],
)
def test_unavailable_combinations_are_one_line(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HierarchicalVAE((4,), 2, model="hierarchy", **options)


def test_config_round_trip_and_one_layer_files_unchanged() -> None:
    """The model's options are saved with its name; a one-layer VAE's config is written as
    before (the model a bare name)."""
    config = ModelConfig.from_options((4,), 3, model="hierarchy", upper_layers=[2, 1])
    data = config.to_dict()
    assert data["model"] == {
        "name": "hierarchy",
        "upper_layers": [2, 1],
        "layer_hidden": [100, 100],
        "inference": "top-down",
        "decoder_reads": "bottom",
    }
    assert ModelConfig.from_dict(json.loads(json.dumps(data))) == config
    del data["model"]["decoder_reads"]  # written before the option existed: its default
    assert ModelConfig.from_dict(json.loads(json.dumps(data))) == config
    assert ModelConfig((4,), 3).to_dict()["model"] == "vae"
    with pytest.raises(ConfigError, match="--upper-layers goes with --model hierarchy"):
        ModelConfig.from_options((4,), 3, upper_layers=[2])


def test_train_evaluate_report_and_resume_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``vaekit train --model hierarchy``: each epoch's line shows every layer's rate and
    active units; evaluate gives them per layer (saved); the run loads, samples (a temperature
    per layer), reports, plots traversals and resumes; trains with --gradient dreg too, and with
    IAF layers and --gradient stl (evaluated and reported: no KL per dimension)."""
    run = tmp_path / "ladder"
    argv = ["train", "--model", "hierarchy", "--upper-layers", "3", "--latent-dim", "4"]
    argv += ["--hidden", "32", "--layer-hidden", "16", "--epochs", "2", "--run-dir", str(run)]
    assert main([*argv, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "layers: z1 " in out and "/4 active, z2 " in out and "/3 active" in out
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"test_rate_z1", "test_rate_z2", "test_active_z1", "test_active_z2"} <= set(metrics)
    assert main(["evaluate", str(run), "-k", "20", "--no-progress"]) == 0
    assert "z_2 (3 dims)" in capsys.readouterr().out
    layers = json.loads((run / "evaluation.json").read_text())["layers"]
    assert [layer["size"] for layer in layers] == [4, 3]
    model = vaekit.load(run)
    assert isinstance(model, HierarchicalVAE) and model.latent_dim == 7
    assert main(["report", str(run)]) == 0
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0
    sample = ["sample", str(run), "-n", "3", "-o", str(tmp_path / "c.npy"), "--temperature"]
    assert main([*sample, "1,0"]) == 0
    assert main([*sample, "0,0,0"]) == 2
    assert "one per latent layer (2), not 3" in capsys.readouterr().err
    assert main(["plot", str(run), "--what", "traverse", "-o", str(tmp_path / "t.png")]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    dreg = ["train", "--model", "hierarchy", "--objective", "iwae", "--samples", "3"]
    dreg += ["--gradient", "dreg", "--run-dir", str(tmp_path / "dreg"), "--epochs", "1"]
    assert main([*dreg, "--no-progress"]) == 0
    assert (
        json.loads((tmp_path / "dreg" / "config.json").read_text())["train"]["gradient"] == "dreg"
    )
    flow = ["train", "--model", "hierarchy", "--inference", "x-and-above", "--posterior", "iaf"]
    flow += ["--flow-hidden", "8", "--gradient", "stl", "--run-dir", str(tmp_path / "iaf")]
    assert main([*flow, "--epochs", "1", "--no-progress"]) == 0
    assert main(["evaluate", str(tmp_path / "iaf"), "-k", "20", "--no-progress"]) == 0
    assert "KL per dimension" not in capsys.readouterr().out  # an IAF layer's is not defined
    assert main(["report", str(tmp_path / "iaf")]) == 0
    assert "no per-dimension split" in (tmp_path / "iaf" / "report.html").read_text()


def test_free_bits_leave_each_layer_its_first_nats() -> None:
    """The penalised rate is Σ_l max(λ B, Σ_b rate_{b,l}) of the same draws (by hand); with λ
    over every layer's batch rate the objective's gradient is the reconstruction's alone, and
    at λ = 0 the objective is the ELBO's; the reported terms are the true ELBO's either way."""
    model = HierarchicalVAE((6,), 3, model="hierarchy", upper_layers=[2], likelihood="gaussian")
    model = model.double()
    batch = Batch(torch.randn(8, 6, dtype=torch.float64))
    noise = torch.randn(2, 8, model.noise_dim, dtype=torch.float64)

    def gradients(free_bits: float, part: str = "objective") -> list[torch.Tensor]:
        model.zero_grad()
        if part == "objective":
            ELBOObjective("reparam", free_bits)(model, batch, noise, beta=1.0)[0].backward()
        else:
            elbo_per_layer(model, batch, noise, free_bits)[0].reconstruction.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    rates = model.rate_per_layer(model.posterior_parameters(batch), noise).detach()
    free_bits = float(rates.mean(0).min()) + 0.01  # over the smaller layer's batch rate only
    with torch.no_grad():
        terms, penalised = elbo_per_layer(model, batch, noise, free_bits)
    by_hand = sum(max(free_bits * 8, float(rates[:, level].sum())) for level in range(2))
    assert abs(float(penalised.sum()) - by_hand) < 1e-10
    assert abs(float(terms.rate) - float(rates.sum())) < 1e-10
    high = float(rates.mean(0).max()) + 1.0
    _, sums = ELBOObjective("reparam", high)(model, batch, noise, beta=1.0)
    for with_free_bits, reconstruction_only in zip(
        gradients(high), gradients(0.0, "reconstruction"), strict=True
    ):
        torch.testing.assert_close(with_free_bits, reconstruction_only, rtol=0, atol=1e-12)
    plain = elbo(model, batch, 2, noise, "sum", check=False)
    torch.testing.assert_close(sums, torch.stack(plain).detach(), rtol=0, atol=1e-10)


def test_a_warm_up_per_layer_weights_each_layer_s_rate_by_its_own_beta() -> None:
    """Each layer's β ramps linearly over its own epochs (0: β from the start); the objective
    with β per layer is reconstruction − Σ_l β_l rate_l of the same draws (by hand, 1e-10), so
    with equal β's its gradient is the one-β objective's (1e-12, float64), and with β_2 = 0 it
    is that of reconstruction − rate_1 alone."""
    config = TrainConfig(beta=2.0, layer_warmup_epochs=[0, 2, 4])
    assert layer_kl_weights(config, 0, 10) == [2.0, 0.0, 0.0]
    assert layer_kl_weights(config, 5, 10) == [2.0, 0.5, 0.25]
    assert layer_kl_weights(config, 30, 10) == [2.0, 2.0, 1.5]
    assert layer_kl_weights(config, 40, 10) == [2.0, 2.0, 2.0]
    torch.manual_seed(0)
    model = HierarchicalVAE((6,), 3, model="hierarchy", upper_layers=[2], likelihood="gaussian")
    model = model.double()
    batch = Batch(torch.randn(8, 6, dtype=torch.float64))
    noise = torch.randn(2, 8, model.noise_dim, dtype=torch.float64)
    per_layer = ELBOObjective("reparam", 0.0, layer_betas=True)

    def gradients(total: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        total.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    betas = torch.tensor([0.7, 0.7], dtype=torch.float64)
    one_beta = gradients(ELBOObjective("reparam")(model, batch, noise, beta=0.7)[0])
    for a, b in zip(gradients(per_layer(model, batch, noise, betas)[0]), one_beta, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    terms, rates = elbo_per_layer(model, batch, noise)
    lower_only = torch.tensor([1.0, 0.0], dtype=torch.float64)
    total = per_layer(model, batch, noise, lower_only)[0]
    assert abs(float((total - terms.reconstruction + rates[0]).detach())) < 1e-10
    expected = gradients(terms.reconstruction - rates[0])
    for a, b in zip(gradients(total), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_a_warm_up_per_layer_trains_and_is_refused_where_it_means_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each epoch's record has every layer's β at its last step (the ramp, by hand); a one-layer
    model, a count that is not one per layer, --warmup-epochs beside it, the IWAE bound and a
    sweep: one line each."""
    run = tmp_path / "run"
    base = ["train", "--model", "hierarchy", "--latent-dim", "4", "--upper-layers", "2",
            "--hidden", "16", "--epochs", "2", "--no-progress"]  # fmt: skip
    assert main([*base, "--layer-warmup-epochs", "0,4", "--run-dir", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = -(-1617 // 128)  # the digits' training examples in batches of 128
    assert [r["beta_z2"] for r in records] == [
        pytest.approx((epoch * steps - 1) / (4 * steps), abs=1e-6) for epoch in (1, 2)
    ]
    assert [r["beta_z1"] for r in records] == [1.0, 1.0]
    capsys.readouterr()
    one_layer = ["train", "--hidden", "16", "--epochs", "2", "--layer-warmup-epochs", "3"]
    assert main([*one_layer, "--run-dir", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use --warmup-epochs" in err, err
    for options, message in [
        (["--layer-warmup-epochs", "3"], "1 entry for 2 latent layers"),
        (["--layer-warmup-epochs", "3,3", "--warmup-epochs", "2"], "drop --warmup-epochs"),
        (["--layer-warmup-epochs", "3,3", "--objective", "iwae"], "no --layer-warmup-epochs"),
    ]:
        target = str(tmp_path / f"refused{len(options)}{options[-1]}")
        assert main([*base, *options, "--run-dir", target]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    config_file = tmp_path / "warm.toml"  # a warm-up per layer replaces a file's (or recipe's)
    config_file.write_text("[train]\nwarmup_epochs = 5\n")
    run = tmp_path / "replaced"
    options = ["--config", str(config_file), "--layer-warmup-epochs", "0,4", "--run-dir", str(run)]
    assert main([*base, *options]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["warmup_epochs"], train["layer_warmup_epochs"]) == (0, [0, 4])
    capsys.readouterr()
    sweep = ["sweep", *base[1:], "--layer-warmup-epochs", "3,3", "--beta", "0.5,1"]
    assert main([*sweep, "--run-dir", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train a warm-up per layer alone" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objective": "iwae", "free_bits": 1.0}, r"use --free-bits 0 \(not 1.0\)$"),
        ({"gradient": "stl", "free_bits": 1.0}, "--free-bits takes the plain gradient"),
        ({"gradient": "stl", "layer_warmup_epochs": [2, 2]}, "--layer-warmup-epochs takes the"),
        ({"free_bits": -1.0}, "free_bits must be a non-negative"),
    ],
)
def test_rate_weights_per_layer_refused_where_they_mean_nothing(
    options: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def test_a_vamp_prior_on_the_top_layer_is_the_mixture_of_the_top_estimates() -> None:
    """Tomczak & Welling's HVAE: p(z_L) = (1/C) Σ_c q(z_L|u_c), q(z_L|x) the top estimate of
    the top-down pass; the layers below keep their conditionals. Built by hand with
    torch.distributions (1e-12, float64); at T = 0 every sampled z_L is one component's mean."""
    torch.manual_seed(0)
    model = HierarchicalVAE((6,), 3, model="hierarchy", upper_layers=[2], hidden=[8],
                            layer_hidden=[8], prior="vamp", pseudo_inputs=4).double()  # fmt: skip
    with torch.no_grad():
        model.prior.top.pseudo_inputs.normal_(0, 2)
        loc, scale = model.posterior_parameters(model.prior.top.pseudo_inputs)[-2:]
        mixture = MixtureSameFamily(
            Categorical(logits=torch.zeros(4, dtype=torch.float64)),
            Independent(Normal(loc, scale), 1),
        )
        z = torch.randn(5, 3 + 2, dtype=torch.float64)
        bottom, top = z[:, :3], z[:, 3:]
        below = Independent(Normal(*model.prior.conditionals[0](top)), 1).log_prob(bottom)
        expected = torch.stack([below, mixture.log_prob(top)], dim=-1)
        torch.testing.assert_close(model.prior.log_prob_layers(z), expected, rtol=0, atol=1e-12)
        tops = model.prior.sample(20, 0.0, torch.Generator().manual_seed(0))[:, 3:]
    assert all(any(torch.equal(t, mean) for mean in loc) for t in tops)
