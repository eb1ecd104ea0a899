"""Random draws for the model's distributions, with an optional seeded generator."""

from __future__ import annotations

from collections.abc import Callable

import torch


def random_like(
    draw: Callable[..., torch.Tensor],
    shape: tuple[int, ...] | torch.Size,
    like: torch.Tensor,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``draw`` (torch.rand or torch.randn) of ``shape`` in ``like``'s dtype and on its device,
    made on ``generator``'s device: a CPU generator serves a CUDA model (the same draws on
    both), where torch itself refuses a generator of another device."""
    device = like.device if generator is None else generator.device
    return draw(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)
