"""Approximate posteriors q(z|x), one per module, each registered in ``POSTERIORS``."""

from vaekit.model.contract import POSTERIORS
from vaekit.registry import import_submodules

import_submodules(__name__)

__all__ = ["POSTERIORS"]
