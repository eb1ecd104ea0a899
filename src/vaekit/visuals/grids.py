"""Grids of examples as PNG (images with Pillow, vectors as a matplotlib heat map)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")  # files only, never a window

from vaekit.data.batch import Batch, as_batch
from vaekit.files import atomic_write_bytes


def image_grid(images: torch.Tensor, ncol: int = 8, pad: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` values in [0, 1] into one uint8 image ``(rows·(H+pad), ...)``,
    grey ``(h, w)`` for C = 1, RGB ``(h, w, 3)`` for C = 3 (extra channels dropped)."""
    images = images.detach().float().cpu().clamp(0, 1)
    n, channels, height, width = images.shape
    channels = 1 if channels == 1 else 3
    rows = math.ceil(n / ncol)
    grid = np.ones((rows * (height + pad) + pad, ncol * (width + pad) + pad, channels), np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = (
            images[i, :channels].permute(1, 2, 0).numpy()
        )
    grid = (grid * 255).round().astype(np.uint8)
    return grid[..., 0] if channels == 1 else grid


MIN_WIDTH = 512
"""Grids are enlarged (whole pixels, nearest neighbour) to at least this many pixels wide."""


def _png_bytes(array: np.ndarray, title: str = "") -> bytes:
    """The grid enlarged to at least ``MIN_WIDTH`` pixels, with ``title`` above it."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(array)
    scale = max(1, math.ceil(MIN_WIDTH / max(image.width, 1)))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    if title:
        font = _caption_font(ImageFont)
        lines = _wrap(title, image.width // 8)
        captioned = Image.new(
            image.mode, (image.width, image.height + 18 * len(lines) + 6), "white"
        )
        captioned.paste(image, (0, 18 * len(lines) + 6))
        draw = ImageDraw.Draw(captioned)
        for i, line in enumerate(lines):
            draw.text((4, 3 + 18 * i), line, fill="black", font=font)
        image = captioned
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _caption_font(image_font: Any) -> Any:
    """matplotlib's DejaVu Sans at 14 px (Pillow's own default font has no combining marks:
    the hat of p̂ came out as a box), else Pillow's default."""
    from matplotlib import font_manager

    try:
        path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))
        return image_font.truetype(path, 14)
    except (OSError, ValueError):
        try:
            return image_font.load_default(size=14)
        except TypeError:  # Pillow before 10.1: one bitmap size
            return image_font.load_default()


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, max(width, 20)) or [""]


def examples_png(x: torch.Tensor, ncol: int = 8, title: str = "") -> bytes:
    """PNG of examples ``(N, *shape)``: images as a tiled grid, vectors ``(N, D)`` as a heat
    map with one row per example."""
    if x.dim() == 4:
        return _png_bytes(image_grid(x, ncol), title)
    import matplotlib.pyplot as plt

    values = x.detach().float().cpu().reshape(len(x), -1).numpy()
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(values) + 1))
    shown = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("dimension")
    ax.set_ylabel("example")
    ax.set_title(title)
    fig.colorbar(shown, ax=ax)
    return figure_png(fig)


def figure_png(fig: object) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return buffer.getvalue()


def save_examples(x: torch.Tensor, path: str | Path, ncol: int = 8, title: str = "") -> None:
    """Save :func:`examples_png` of ``x`` atomically."""
    atomic_write_bytes(path, examples_png(x, ncol, title))


def samples_png(
    model: torch.nn.Module,
    n: int = 64,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> bytes:
    """The means of p(x|z) for ``n`` draws z from the prior at temperature T (a conditional
    model's: one column per class)."""
    x = model.sample(n, temperature, generator=generator)
    if model.classes is None:
        return examples_png(x, title=f"samples (T={temperature})")
    title = f"samples (T={temperature}); column c: class c, given to p(x|z, y)"
    return examples_png(x, ncol=model.classes, title=title)


def reconstructions_png(
    model: torch.nn.Module, batch: torch.Tensor | Batch, ncol: int = 8
) -> bytes:
    """Inputs and their reconstructions E[x | z = E_q[z|x]] on alternating rows."""
    recon = model.reconstruct(batch)
    x = as_batch(batch).x
    rows = []
    for start in range(0, len(x), ncol):
        rows += [x[start : start + ncol], recon[start : start + ncol]]
    return examples_png(
        torch.cat(rows),
        ncol,
        title="rows 1, 3, ...: test inputs; rows 2, 4, ...: their "
        "reconstructions E[x | z = E_q[z|x]]",
    )


def save_reconstructions(
    model: torch.nn.Module, batch: torch.Tensor | Batch, path: str | Path, ncol: int = 8
) -> None:
    atomic_write_bytes(path, reconstructions_png(model, batch, ncol))
