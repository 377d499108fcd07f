"""Bayesian neural networks with flow posteriors over their weights.

    import flowpost as fp
    net = fp.bnn.mlp(jax.random.key(0), n_in=13, hidden=(50,))
    model = fp.bnn.model(net, likelihood="gaussian", prior=1.0)   # learned noise
    result = fp.bnn.fit(model, x, y, family="flow", epochs=200, key=jax.random.key(1))
    pred = fp.bnn.predict.regression(model, result.sample(key, 100), x_test, y_test)
    result.save("runs/bnn"); fp.bnn.load("runs/bnn", model)

- :mod:`.model`: network + likelihood + prior -> a posterior over flat weights
  (also a full-batch :class:`flowpost.Target` for ``fp.fit``);
- :mod:`.train`: the unbiased minibatch ELBO, epochs in ``lax.scan``, ``vmap`` over data sets;
- :mod:`.families`: mean-field, low-rank, and flow families that scale;
- :mod:`.predict`: predictive mean/variance/log-likelihood, accuracy, calibration;
- :mod:`.uci`: the UCI regression benchmark and four classification sets;
- :mod:`.experiment`: the UCI protocols end to end (what the CLI runs).
"""

from . import experiment, families, predict, uci
from .experiment import run_classification, run_uci
from .families import FAMILIES
from .model import (
    BNN,
    Bernoulli,
    Categorical,
    Gaussian,
    GaussianPrior,
    HeteroscedasticGaussian,
    make_likelihood,
    mlp,
    model,
)
from .train import BNNResult, fit, fit_many, load, minibatch_log_joint

__all__ = [
    "model",
    "mlp",
    "BNN",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Bernoulli",
    "Categorical",
    "GaussianPrior",
    "make_likelihood",
    "fit",
    "fit_many",
    "load",
    "BNNResult",
    "minibatch_log_joint",
    "families",
    "FAMILIES",
    "predict",
    "uci",
    "experiment",
    "run_uci",
    "run_classification",
]
