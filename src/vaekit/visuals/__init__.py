"""Pictures of what a model learned: sample grids and reconstructions."""

from vaekit.visuals.grids import save_examples, save_reconstructions, save_samples

__all__ = ["save_examples", "save_reconstructions", "save_samples"]
