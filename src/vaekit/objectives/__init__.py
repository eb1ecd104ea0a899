"""Training objectives and estimators built on the model's distributions.

- :func:`elbo`: ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) || p(z)) (reconstruction − rate).
- :func:`iwae_bound`: the importance-weighted bound L_K, a training objective.
- :func:`log_px`: the importance-sampled estimate log p̂_K(x), chunked for bounded memory.
"""

from vaekit.objectives.elbo import ELBOTerms, elbo, log_weights
from vaekit.objectives.importance import iter_log_weights, iwae_bound, log_px

__all__ = ["ELBOTerms", "elbo", "iter_log_weights", "iwae_bound", "log_px", "log_weights"]
