"""Training objectives and estimators, written against the model's contract.

- :func:`elbo`: ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)) (reconstruction − rate).
- :func:`iwae_bound`: the importance-weighted bound L_K, a training objective.
- :func:`log_px`: the importance-sampled estimate log p̂_K(x), chunked for bounded memory.
- ``OBJECTIVES``: the registered training objectives (``elbo``, ``iwae``).
"""

from vaekit.objectives.elbo import ELBOTerms, LogWeights, elbo, elbo_in_batches, log_weights
from vaekit.objectives.importance import iter_log_weights, iwae_bound, log_mean_exp, log_px
from vaekit.objectives.training import OBJECTIVES

__all__ = [
    "OBJECTIVES",
    "ELBOTerms",
    "LogWeights",
    "elbo",
    "elbo_in_batches",
    "iter_log_weights",
    "iwae_bound",
    "log_mean_exp",
    "log_px",
    "log_weights",
]
