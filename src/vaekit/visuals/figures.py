"""Matplotlib figures of a run: training curves, the identity, KL per dimension, the latent
space, interpolations and traversals. Each function returns PNG bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vaekit.data.batch import Batch, as_batch
from vaekit.evaluation.layers import layer_starts
from vaekit.visuals.grids import examples_png, figure_png


def curves_png(history: list[dict[str, Any]]) -> bytes:
    """Per-epoch train and held-out ELBO, reconstruction, KL, the learning rate, and a
    classifier's test error where the run has one (a semi-supervised model's). The
    first epochs, far from the rest, would flatten every later change: the axes fit the
    epochs after the first (after the first 5% of a long run), and say so where the early
    ones are off the scale."""
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    errors = [100 * r["test_error"] for r in history if "test_error" in r]
    fig, axes = plt.subplots(1, 5 if errors else 4, figsize=(20 if errors else 16, 3.5))
    panels = (("elbo", "ELBO"), ("reconstruction", "reconstruction"), ("rate", "rate (KL)"))
    skip = max(1, len(history) // 20)
    for ax, (key, title) in zip(axes, panels, strict=False):
        series = {
            "train": [r[f"train_{key}"] for r in history],
            "held-out": [r[f"test_{key}"] for r in history],
        }
        for name, values in series.items():
            ax.plot(epochs, values, label=name)
        later = [v for values in series.values() for v in values[skip:]]
        clipped = _fit_to_later_epochs(ax, later)
        ax.set_title(f"{title} (nats per example)")
        early = "epoch 1" if skip == 1 else f"epochs 1–{skip}"
        ax.set_xlabel("epoch" + (f" ({early} partly off the scale)" if clipped else ""))
        ax.legend()
    axes[3].plot(epochs, [r["lr"] for r in history])
    axes[3].set_yscale("log")
    axes[3].set_title("learning rate")
    axes[3].set_xlabel("epoch")
    if errors:
        axes[4].plot(epochs[-len(errors) :], errors)
        axes[4].set_title("classifier q(y|x): test error (%)")
        axes[4].set_xlabel("epoch")
    fig.tight_layout()
    return figure_png(fig)


def _fit_to_later_epochs(ax: Any, later: list[float]) -> bool:
    """Limit the y axis to the ``later`` values (with a margin) where earlier ones lie outside
    them; return whether it did."""
    if len(later) < 2:
        return False
    low, high = min(later), max(later)
    margin = 0.1 * (high - low or abs(high) or 1.0)
    bottom, top = ax.get_ylim()
    if bottom >= low - margin and top <= high + margin:
        return False
    ax.set_ylim(low - margin, high + margin)
    return True


def identity_png(evaluation: dict[str, Any]) -> bytes:
    """The identity's terms as one bar each from zero (right of zero positive, left negative;
    nats per example): log p̂(x) = ELBO + gap, ELBO = reconstruction − rate. Correct for any
    sign (a Gaussian's reconstruction can be positive)."""
    import matplotlib.pyplot as plt

    recon, rate = evaluation["reconstruction"]["value"], evaluation["rate"]["value"]
    elbo, gap = evaluation["elbo"]["value"], evaluation["gap"]["value"]
    log_px = evaluation["log_px"]["value"]
    rows = [
        ("log p̂_K(x)", log_px, "tab:green"),
        ("ELBO", elbo, "tab:blue"),
        ("gap ≈ KL(q || p(z|x))", gap, "tab:orange"),
        ("reconstruction", recon, "tab:purple"),
        ("− rate (KL to p(z))", -rate, "tab:red"),
    ]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [name for name, _, _ in rows][::-1]
    values = [value for _, value, _ in rows][::-1]
    bars = ax.barh(names, values, color=[colour for _, _, colour in rows][::-1])
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    span = max(abs(v) for v in values) or 1.0
    ax.set_xlim(min(0, min(values)) - 0.25 * span, max(0, max(values)) + 0.25 * span)
    ax.set_xlabel(f"nats per example (K = {evaluation['k']}, {evaluation['n']} examples)")
    ax.set_title(
        f"log p̂(x) {log_px:.2f} = ELBO {elbo:.2f} + gap {gap:.2f};   "
        f"ELBO = reconstruction {recon:.2f} − rate {rate:.2f}",
        fontsize=10,
    )
    fig.tight_layout()
    return figure_png(fig)


def kl_per_dimension_png(
    kl: list[float | None], threshold_active: list[bool], layer_sizes: list[int] | None = None
) -> bytes:
    """Bars of each dimension's KL, active units in colour; whole-numbered ticks. With a
    hierarchy's ``layer_sizes``, each layer named and fenced off; a dimension whose KL is not
    defined (None: a top prior, or a layer's q, that does not factorise) is marked on the axis."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(kl)), 3))
    colours = ["tab:blue" if active else "lightgrey" for active in threshold_active]
    ax.bar(range(len(kl)), [0.0 if v is None else v for v in kl], color=colours)
    unknown = [d for d, v in enumerate(kl) if v is None]
    if unknown:
        ax.plot(unknown, [0.0] * len(unknown), "x", color="tab:red", label="not defined")
        ax.legend(loc="upper right", fontsize=8)
    for start, size, level in _layer_spans(layer_sizes or []):
        if start:
            ax.axvline(start - 0.5, color="black", linewidth=0.8)
        ax.text(start + size / 2 - 0.5, 1.0, f"z_{level}", transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("latent dimension (grey: inactive, Cov_x E_q[z_d] ≤ 0.01)")
    ax.set_ylabel("KL (nats)")
    title = f"KL per dimension: {sum(threshold_active)} of {len(kl)} active"
    ax.set_title(title, pad=14 if layer_sizes else 6)
    fig.tight_layout()
    return figure_png(fig)


def _layer_spans(sizes: list[int]) -> list[tuple[int, int, int]]:
    """(first dimension, size, level from 1) of each layer, for two layers or more."""
    if len(sizes) < 2:
        return []
    starts = layer_starts(sizes)
    return [
        (start, size, level)
        for level, (start, size) in enumerate(zip(starts, sizes, strict=True), 1)
    ]


MAX_LEGEND_CLASSES = 20


def latent_scatter_png(
    means: torch.Tensor, labels: torch.Tensor | None, classes: list[str] | None = None
) -> bytes:
    """Encoded means E_q[z|x]: the latent itself when 2-D, else its first two principal
    components, coloured by label: a legend of the classes (their ``classes`` names, if
    given) for up to 20 of them, else a colour bar."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    values = means.detach().cpu().double().numpy()
    if values.shape[1] == 2:
        points, axis = values, ("z_1", "z_2")
    elif values.shape[1] == 1:
        points, axis = np.column_stack([values[:, 0], np.zeros(len(values))]), ("z_1", "")
    else:
        pca = PCA(n_components=2).fit(values)
        points = pca.transform(values)
        share = 100 * pca.explained_variance_ratio_
        axis = (f"PC 1 ({share[0]:.0f}% of variance)", f"PC 2 ({share[1]:.0f}%)")
    fig, ax = plt.subplots(figsize=(6, 5))
    values_of = None if labels is None else labels.cpu().numpy()
    if values_of is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.7)
    elif len(np.unique(values_of)) <= MAX_LEGEND_CLASSES:
        colours = plt.get_cmap("tab20" if len(np.unique(values_of)) > 10 else "tab10")
        for i, label in enumerate(np.unique(values_of)):
            chosen = values_of == label
            name = classes[label] if classes is not None and label < len(classes) else label
            ax.scatter(*points[chosen].T, s=4, alpha=0.7, color=colours(i), label=str(name))
        ax.legend(
            markerscale=3, fontsize=8, title="label", loc="center left", bbox_to_anchor=(1, 0.5)
        )
    else:
        shown = ax.scatter(points[:, 0], points[:, 1], c=values_of, s=4, cmap="viridis")
        fig.colorbar(shown, ax=ax, label="label")
    ax.set_xlabel(axis[0])
    ax.set_ylabel(axis[1])
    ax.set_title(f"encoded test data ({len(values)} examples)")
    fig.tight_layout()
    return figure_png(fig)


@torch.no_grad()
def interpolations_png(
    model: torch.nn.Module, x: torch.Tensor | Batch, pairs: int = 8, steps: int = 10
) -> bytes:
    """Decoded means along straight lines between the posterior means of pairs of examples
    (x[0]→x[1], x[2]→x[3], ...): one row per pair."""
    batch = as_batch(x).select(slice(2 * pairs))
    z = model.representative(batch)
    start, end = z[0::2], z[1::2]
    t = torch.linspace(0, 1, steps, device=z.device).reshape(1, steps, 1)
    path = start[:, None] * (1 - t) + end[:, None] * t
    labels = None if batch.y is None else batch.y[0::2].repeat_interleave(steps)  # the start's
    return examples_png(
        model.decode(path.reshape(-1, z.shape[-1]), labels).mean,
        ncol=steps,
        title=f"each row: the decoded means along a straight line from one test example's "
        f"E_q[z|x] (left) to another's (right), {steps} steps",
    )


@torch.no_grad()
def traversals_png(
    model: torch.nn.Module,
    x: torch.Tensor | Batch,
    importance: list[float],
    dims: int = 8,
    steps: int = 10,
    span: float = 3.0,
) -> bytes:
    """From the posterior mean of the first example, vary each of the ``dims`` dimensions with
    the largest ``importance`` (KL per dimension, or the variance of the posterior means) over
    [−span, span] (one row per dimension). In a hierarchy the rows are shared out among the
    latent layers (the most important dimensions of each), and a varied upper layer reaches
    the decoder through the prior means of the layers below it (:meth:`VAE.descend`): what
    that layer encodes."""
    sizes = model.layer_sizes
    starts = layer_starts(sizes)
    per_layer = [dims // len(sizes) + (level < dims % len(sizes)) for level in range(len(sizes))]
    chosen = [
        (level, start + d)
        for level, (start, size, count) in enumerate(zip(starts, sizes, per_layer, strict=True))
        for d in sorted(range(size), key=lambda d, start=start: -importance[start + d])[:count]
    ]
    first = as_batch(x).select(slice(1))
    base = model.representative(first)[0]
    values = torch.linspace(-span, span, steps, device=base.device)
    rows = []
    for level, d in chosen:
        z = base.repeat(steps, 1)
        z[:, d] = values
        rows.append(model.descend(z, level))
    if len(sizes) == 1:
        rows_are = f"latent dimensions {[d for _, d in chosen]} (the most informative first)"
    else:
        rows_are = (
            "; ".join(
                f"z_{level + 1} dimensions {[d - starts[level] for lv, d in chosen if lv == level]}"
                for level in range(len(sizes))
            )
            + " (the layers below a varied one at their prior means)"
        )
    labels = None if first.y is None else first.y.expand(len(rows) * steps)
    return examples_png(
        model.decode(torch.cat(rows), labels).mean,
        ncol=steps,
        title=f"rows: {rows_are}, each from {-span:g} to {span:g} in {steps} steps, the "
        "others at the first test example's E_q[z|x]",
    )


def rate_distortion_png(points: list[dict[str, Any]], highlight: str | None = None) -> bytes:
    """The rate–distortion plane of a sweep (Alemi et al. 2018): each member's held-out rate
    R = KL and distortion D = −reconstruction, in nats per example, coloured by its setting
    (β, and warm-up where swept) and marked by seed, on dashed lines of equal ELBO
    (−ELBO = D + R); the member ``highlight`` ringed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5.5))
    settings = list(dict.fromkeys(p["setting"] for p in points))  # in the sweep's order
    seeds = sorted({p["seed"] for p in points})
    colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(settings)))
    markers = "osD^v<>p*h"
    rates = [p["rate"] for p in points]
    distortions = [p["distortion"] for p in points]
    losses = [r + d for r, d in zip(rates, distortions, strict=True)]  # −ELBO
    low, high = min(losses), max(losses)
    for point in points:
        colour = colours[settings.index(point["setting"])]
        marker = markers[seeds.index(point["seed"]) % len(markers)]
        ax.scatter(point["rate"], point["distortion"], color=colour, marker=marker, zorder=3)
        if point["member"] == highlight:
            ax.scatter(point["rate"], point["distortion"], s=260, facecolors="none",
                       edgecolors="red", linewidths=1.5, zorder=4, label="this run")  # fmt: skip
    for setting, colour in zip(settings, colours, strict=True):
        ax.scatter([], [], color=colour, label=setting)
    for i, seed in enumerate(seeds):
        ax.scatter([], [], color="k", marker=markers[i % len(markers)], label=f"seed {seed}")
    pad_r, pad_d = 0.1 * max(np.ptp(rates), 1.0), 0.1 * max(np.ptp(distortions), 1.0)
    (r0, r1), (d0, d1) = (
        (max(0.0, min(rates) - pad_r), max(rates) + pad_r),
        (
            min(distortions) - pad_d,
            max(distortions) + pad_d,
        ),
    )
    ax.set_xlim(r0, r1)
    ax.set_ylim(d0, d1)
    for level in _round_levels(low, high):  # −ELBO = D + R: lines of slope −1
        ax.plot([r0, r1], [level - r0, level - r1], ls="--", lw=0.8, color="0.7", zorder=1)
        r = min(r1, level - d0)  # the label where the line leaves the plot, right or bottom
        if r0 < r and d0 <= level - r < d1:
            ax.annotate(
                f"ELBO {-level:g}",
                (r, level - r),
                xytext=(-2, 2),
                textcoords="offset points",
                fontsize=7,
                color="0.45",
                ha="right",
                va="bottom",
            )
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)) (nats per example)")
    ax.set_ylabel("distortion D = −E_q log p(x|z) (nats per example)")
    ax.set_title("held-out rate and distortion; dashed: equal ELBO = −(D + R)")
    ax.legend(fontsize=8)
    return figure_png(fig)


def _round_levels(low: float, high: float) -> list[float]:
    """Four to eight round values (steps of 1, 2 or 5 × 10^k) spanning [low, high] and a step
    beyond each end."""
    span = max(high - low, 1e-3)
    base = 10 ** np.floor(np.log10(span / 4))
    step = next(base * m for m in (1, 2, 5, 10) if span / (base * m) <= 6)
    start = np.floor(low / step) * step - step
    return [float(round(v, 6)) for v in np.arange(start, high + 1.5 * step, step)]
