"""Posterior predictive summaries from weight samples ``thetas (S, dim)``.

Regression (Gaussian likelihood): the predictive is the mixture
``(1/S) sum_s N(f_s(x), sigma_s^2)`` (``sigma_s(x)^2`` for the heteroscedastic one); its mean,
variance (law of total variance) and the test log-likelihood
``mean_i log (1/S) sum_s N(y_i | f_s(x_i), sigma_s^2)`` (logsumexp over samples), all in
the target's original units when ``y_mean, y_std`` are given (the model was fitted to
``(y - y_mean) / y_std``; the log-likelihood then shifts by ``-log y_std``).

Classification: predictive probabilities ``(1/S) sum_s softmax(f_s(x))``, accuracy,
test log-likelihood, and the expected calibration error (Guo et al. 2017) with a
reliability diagram.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .model import BNN, Bernoulli, Categorical


def _thetas(model: BNN, thetas) -> jax.Array:
    """Weight samples as ``(S, dim)`` (one ``(dim,)`` vector is one sample), checked."""
    thetas = jnp.asarray(thetas)
    thetas = thetas[None] if thetas.ndim == 1 else thetas
    if thetas.ndim != 2 or thetas.shape[1] != model.dim:
        raise ValueError(
            f"bnn.predict: `thetas` must be weight samples of shape (S, {model.dim}) (the model's "
            f"theta: weights and likelihood/prior parameters, as result.sample gives), got {thetas.shape}"
        )
    return thetas


def _scalar(name: str, value, positive: bool = False) -> float:
    v = np.asarray(value, dtype=np.float64)
    if v.size != 1 or not np.isfinite(v).all() or (positive and not v.item() > 0):
        raise ValueError(
            f"bnn.predict: `{name}` must be one finite{' positive' if positive else ''} number "
            f"(the training targets' {'scale' if positive else 'offset'}), got {value!r}"
        )
    return float(v.item())


def regression(model: BNN, thetas, x, y=None, y_mean: float = 0.0, y_std: float = 1.0) -> dict:
    """Predictive ``mean``, ``var``, ``sd`` (B,); with ``y``: ``rmse``, ``test_ll`` (per point mean)
    and ``log_lik`` (B,), in original units. ``x, y`` are checked as :meth:`BNN.check_data`
    checks training data (``y`` in original units)."""
    if not hasattr(model.likelihood, "mean_and_var"):
        raise ValueError(
            'bnn.predict.regression: the model\'s likelihood is not Gaussian ("gaussian" or "heteroscedastic")'
        )
    thetas = _thetas(model, thetas)
    y_mean, y_std = _scalar("y_mean", y_mean), _scalar("y_std", y_std, positive=True)
    if y is not None:
        x, y = model.check_data(x, y)
    outputs = model.outputs(thetas, jnp.asarray(x, jnp.float32))  # (S, B, *out)
    f, noise_var = jax.vmap(lambda o, t: model.likelihood.mean_and_var(o, model.split(t)[1]))(outputs, thetas)
    noise_var = jnp.broadcast_to(jnp.reshape(noise_var, (thetas.shape[0], -1)), f.shape)  # (S, B)
    mean = jnp.mean(f, 0)
    # law of total variance, the spread of f about its mean (not E f^2 - (E f)^2, which
    # cancels to a negative number in float32 when |f| >> its spread)
    var = jnp.mean(noise_var, 0) + jnp.mean((f - mean) ** 2, 0)
    out: dict[str, Any] = {"mean": np.asarray(mean * y_std + y_mean), "var": np.asarray(var * y_std**2)}
    out["sd"] = np.sqrt(out["var"])
    if y is not None:
        y = jnp.asarray(y, jnp.float32).reshape(-1)
        ys = (y - y_mean) / y_std
        lp = -0.5 * (math.log(2 * math.pi) + jnp.log(noise_var) + (ys - f) ** 2 / noise_var)  # (S, B)
        ll = jax.nn.logsumexp(lp, axis=0) - math.log(thetas.shape[0]) - math.log(y_std)
        out["log_lik"] = np.asarray(ll)
        out["test_ll"] = float(jnp.mean(ll))
        out["rmse"] = float(jnp.sqrt(jnp.mean((mean * y_std + y_mean - y) ** 2)))
    return out


def log_predictive(model: BNN, thetas, x, y) -> np.ndarray:
    """Per-example log predictive density ``log (1/S) sum_s p(y_i | x_i, theta_s)`` ``(B,)``
    (logsumexp over the ``S`` weight samples), for any likelihood."""
    x, y = model.check_data(x, y)
    lp = model.log_likelihood_samples(_thetas(model, thetas), jnp.asarray(x), jnp.asarray(y))
    return np.asarray(jax.nn.logsumexp(lp, axis=0) - math.log(lp.shape[0]))


def probabilities(model: BNN, thetas, x) -> np.ndarray:
    """Predictive class probabilities ``(B, K)`` (``K = 2`` for a Bernoulli likelihood)."""
    out = model.outputs(_thetas(model, thetas), jnp.asarray(x, jnp.float32))
    if isinstance(model.likelihood, Bernoulli):
        p1 = jax.nn.sigmoid(out.reshape(out.shape[0], -1))
        probs = jnp.stack([1 - p1, p1], -1)
    elif isinstance(model.likelihood, Categorical):
        probs = jax.nn.softmax(out, -1)
    else:
        raise ValueError("bnn.predict.probabilities: the model's likelihood is not Bernoulli or categorical")
    return np.asarray(jnp.mean(probs, 0))


def ece(probs, y, bins: int = 10) -> float:
    """Expected calibration error: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over
    equal-width confidence bins (Naeini et al. 2015; Guo et al. 2017)."""
    conf, acc, counts = reliability(probs, y, bins)
    ok = counts > 0
    return float(np.sum(counts[ok] * np.abs(acc[ok] - conf[ok])) / max(np.sum(counts), 1))


def reliability(probs, y, bins: int = 10):
    """Per confidence bin: mean confidence, accuracy, count (empty bins: NaN, NaN, 0)."""
    probs, y = np.asarray(probs), np.asarray(y).reshape(-1).astype(int)
    if probs.ndim != 2 or probs.shape[0] != y.shape[0]:
        raise ValueError(
            f"bnn.predict: `probs` must be class probabilities of shape (n, K) for n = {y.shape[0]} "
            f"labels, got {probs.shape}"
        )
    conf = probs.max(-1)
    correct = probs.argmax(-1) == y
    which = np.minimum((conf * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins).astype(float)
    with np.errstate(invalid="ignore"):
        c = np.bincount(which, conf, bins) / counts
        a = np.bincount(which, correct.astype(float), bins) / counts
    return c, a, counts


def classification(model: BNN, thetas, x, y=None, bins: int = 10) -> dict:
    """``probs (B, K)``; with ``y``: ``accuracy``, ``test_ll`` (mean log predictive prob), ``ece``.
    ``y`` is checked as training labels are; a Bernoulli model with ``P`` outputs per example
    gives ``probs (B * P, 2)``, one row per output, scored against ``y (B, P)`` flattened."""
    if y is not None:
        x, y = model.check_data(x, y)
    probs = probabilities(model, thetas, x)
    out: dict[str, Any] = {"probs": probs}
    if y is not None:
        y = np.asarray(y).reshape(-1).astype(int)
        out["accuracy"] = float(np.mean(probs.argmax(-1) == y))
        out["test_ll"] = float(np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))
        out["ece"] = ece(probs, y, bins)
    return out


def reliability_plot(probs, y, path, bins: int = 10, title: str = "reliability") -> None:
    """Reliability diagram (accuracy vs confidence per bin) as a PNG."""
    from ...vi.plots import figure

    conf, acc, counts = reliability(probs, y, bins)
    fig = figure(figsize=(4, 4))
    ax = fig.subplots()
    ok = counts > 0
    centres = (np.arange(bins) + 0.5) / bins
    ax.bar(centres[ok], acc[ok], width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(
        xlabel="confidence",
        ylabel="accuracy",
        title=f"{title} (ECE {ece(probs, y, bins):.3f})",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def regression_plot(mean, sd, y, path, title: str = "predictive") -> None:
    """Two panels: predicted vs observed with +-2 sd bars, and the calibration of central
    predictive intervals (observed coverage vs nominal level, Gaussian approximation)."""
    from scipy.stats import norm

    from ...vi.plots import figure

    mean, sd, y = (np.asarray(a).reshape(-1) for a in (mean, sd, y))
    fig = figure(figsize=(8, 4))
    a1, a2 = fig.subplots(1, 2)
    a1.errorbar(y, mean, yerr=2 * sd, fmt=".", alpha=0.5, ms=3)
    lo, hi = min(y.min(), mean.min()), max(y.max(), mean.max())
    a1.plot([lo, hi], [lo, hi], "k--", lw=1)
    a1.set(xlabel="observed", ylabel="predicted (±2 sd)", title=title)
    levels = np.linspace(0.05, 0.95, 19)
    z = np.abs(y - mean) / sd
    cover = [np.mean(z <= norm.ppf(0.5 + p / 2)) for p in levels]
    a2.plot(levels, cover, "o-", ms=3)
    a2.plot([0, 1], [0, 1], "k--", lw=1)
    a2.set(xlabel="nominal central interval", ylabel="observed coverage", title="interval calibration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
