"""Pictures of what a model learned: sample grids, reconstructions and the report's figures."""

from vaekit.visuals.grids import save_examples, save_reconstructions

__all__ = ["save_examples", "save_reconstructions"]
