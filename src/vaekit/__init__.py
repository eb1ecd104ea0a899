"""vaekit: variational autoencoders trained by maximising the ELBO,

    log p(x) = ELBO(x) + KL(q(z|x) || p(z|x)),

with every term of that identity measurable. Every number vaekit reports is in nats per
example, summed over data (or latent) dimensions.

Quick start::

    import vaekit
    data = vaekit.load_dataset("digits")
    model = vaekit.VAE(data.shape, latent_dim=8)
    vaekit.fit(model, data, epochs=50, run_dir="runs/digits")
    q = model.encode(data.test_x)           # q(z|x), a torch Distribution
    x = vaekit.fixed_binarization(data.test_x)  # the standard binarised test set
    terms = vaekit.elbo(model, x)           # per-example elbo, reconstruction, rate
    result = vaekit.evaluate(model, data, k=1000)   # log p̂_K(x), gap, diagnostics
    print(result.table())
    model = vaekit.load("runs/digits")
"""

from vaekit.data import Batch, Dataset, fixed_binarization, load_dataset
from vaekit.errors import VaekitError
from vaekit.evaluation import Evaluation, evaluate
from vaekit.model import VAE, ModelConfig
from vaekit.objectives import ELBOTerms, elbo, iwae_bound, log_px
from vaekit.report import write_report
from vaekit.training import TrainConfig, fit, load, resume
from vaekit.version import __version__ as __version__

__all__ = [
    "VAE",
    "Batch",
    "Dataset",
    "ELBOTerms",
    "Evaluation",
    "ModelConfig",
    "TrainConfig",
    "VaekitError",
    "elbo",
    "evaluate",
    "fit",
    "fixed_binarization",
    "iwae_bound",
    "load",
    "load_dataset",
    "log_px",
    "resume",
    "write_report",
]
