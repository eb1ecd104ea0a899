"""Priors p(z), one per module, each registered in ``PRIORS``."""

from vaekit.model.contract import PRIORS
from vaekit.registry import import_submodules

import_submodules(__name__)

__all__ = ["PRIORS"]
