"""A posterior over a neural network's weights: network + likelihood + prior.

    model = fp.bnn.model(net, likelihood="gaussian", prior=1.0)      # an Equinox module
    model = fp.bnn.model(apply, params=params, ...)                  # Flax-style apply(params, x)
    target = model.target(x, y)                                      # a flowpost.Target

The variational parameters live on one flat vector ``theta (dim,)``::

    theta = [ weights (n_weights,) | likelihood extras | prior extras ]

``weights`` is ``jax.flatten_util.ravel_pytree`` of the network's inexact-array leaves;
the extras are unconstrained hyper-parameters with their own priors: the log precision
of a learned Gaussian noise (Gamma prior on the precision, as in probabilistic
backpropagation, Hernandez-Lobato & Adams 2015, but weaker by default) and, with a hierarchical prior, one log
precision per layer (Gamma hyper-prior; MacKay 1992, Neal 1996).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..._checks import check_positive
from ...vi.target import Target

Array = jax.Array
LIKELIHOODS = ("gaussian", "heteroscedastic", "bernoulli", "categorical")


def _gamma_log_prior_of_log(u, a, b):
    """log density of ``u = log(tau)`` when ``tau ~ Gamma(a, b)`` (rate ``b``), Jacobian included."""
    return a * math.log(b) - math.lgamma(a) + a * u - b * jnp.exp(u)


# --------------------------------------------------------------------------- likelihoods
@dataclasses.dataclass(frozen=True)
class Gaussian:
    """``y ~ N(f(x), sigma^2)``. ``noise=None``: ``sigma`` is learned, its precision
    ``1/sigma^2 ~ Gamma(a, b)`` (``precision_prior=(a, b)``, rate ``b``). The default
    (1, 0.01) is weak: PBP's Gamma(6, 6) holds the precision near 1 (standardised
    targets) so firmly that it costs test log-likelihood under VI (the BNN benchmark page
    has the measurement).
    The network's per-example output has shape ``()`` or ``(1,)``."""

    noise: float | None = None
    precision_prior: tuple[float, float] = (1.0, 0.01)

    @property
    def n_extra(self) -> int:
        return 0 if self.noise is not None else 1

    def log_noise_precision(self, extra):
        """``log(1/sigma^2)``: from the fixed ``noise``, or the learned ``extra[0]``."""
        return -2.0 * math.log(self.noise) if self.noise is not None else extra[0]

    def mean_and_var(self, out, extra):
        """``out (B, 1) or (B,)`` -> the mean ``(B,)`` and noise variance (a scalar) of ``y``."""
        return out.reshape(out.shape[0]), jnp.exp(-self.log_noise_precision(extra))

    def log_prob(self, out, y, extra):
        """``out (B, 1) or (B,)``, ``y (B,)`` -> ``(B,)``."""
        f = out.reshape(y.shape)
        lt = self.log_noise_precision(extra)
        return 0.5 * lt - 0.5 * math.log(2 * math.pi) - 0.5 * jnp.exp(lt) * (y - f) ** 2

    def log_prior_extra(self, extra):
        """Log prior density of the likelihood's own parameters ``extra`` (0 when it has none)."""
        return 0.0 if self.noise is not None else _gamma_log_prior_of_log(extra[0], *self.precision_prior)

    def init_extra(self):
        """Initial value of ``extra`` (shape ``(n_extra,)``)."""
        return jnp.zeros((self.n_extra,))

    def check(self, out_shape, y):
        """Raise ``ValueError`` unless network outputs of shape ``out_shape`` per example fit labels ``y``."""
        if out_shape not in ((), (1,)):
            raise ValueError(
                f"bnn: a Gaussian likelihood needs one output per example (shape () or (1,)), "
                f"the network returns shape {out_shape}"
            )


@dataclasses.dataclass(frozen=True)
class HeteroscedasticGaussian:
    """``y ~ N(f_0(x), sigma(x)^2)`` with ``sigma(x) = softplus(f_1(x)) + min_noise``: the
    network's two outputs per example (shape ``(2,)``) are the mean and the raw noise scale
    (Nix & Weigend 1994; the likelihood of deep ensembles, Lakshminarayanan et al. 2017).
    The noise is part of the network, so its posterior is the weights' posterior.
    ``min_noise`` (in the units of ``y``) keeps the density bounded."""

    min_noise: float = 1e-3
    n_extra = 0

    def mean_and_var(self, out, extra):
        """``out (B, 2)`` -> the mean ``(B,)`` and noise variance ``(B,)`` of ``y``."""
        sd = jax.nn.softplus(out[:, 1]) + self.min_noise
        return out[:, 0], sd**2

    def log_prob(self, out, y, extra):
        """``out (B, 2)``, ``y (B,)`` -> ``(B,)``."""
        f, var = self.mean_and_var(out, extra)
        return -0.5 * (math.log(2 * math.pi) + jnp.log(var) + (y - f) ** 2 / var)

    def log_prior_extra(self, extra):
        """Log prior density of the likelihood's own parameters ``extra`` (0 when it has none)."""
        return 0.0

    def init_extra(self):
        """Initial value of ``extra`` (shape ``(n_extra,)``)."""
        return jnp.zeros((0,))

    def check(self, out_shape, y):
        """Raise ``ValueError`` unless network outputs of shape ``out_shape`` per example fit labels ``y``."""
        if out_shape != (2,):
            raise ValueError(
                f"bnn: a heteroscedastic Gaussian likelihood needs two outputs per example (mean and "
                f"noise scale, shape (2,)), the network returns shape {out_shape}"
            )


@dataclasses.dataclass(frozen=True)
class Bernoulli:
    """``y ~ Bernoulli(sigmoid(f(x)))``, labels in {0, 1}. One logit per example (output
    shape ``()`` or ``(1,)``, ``y (N,)``) or one per event coordinate (output shape equal
    to ``y.shape[1:]``, e.g. pixels; their log-probabilities add up)."""

    n_extra = 0

    def log_prob(self, out, y, extra):
        """``out``, ``y (B, ...)`` -> per-example log-likelihood ``(B,)``."""
        f = out.reshape(y.shape)
        lp = y * jax.nn.log_sigmoid(f) + (1 - y) * jax.nn.log_sigmoid(-f)
        return lp.reshape(y.shape[0], -1).sum(-1)

    def log_prior_extra(self, extra):
        """Log prior density of the likelihood's own parameters ``extra`` (0 when it has none)."""
        return 0.0

    def init_extra(self):
        """Initial value of ``extra`` (shape ``(n_extra,)``)."""
        return jnp.zeros((0,))

    def check(self, out_shape, y):
        """Raise ``ValueError`` unless network outputs of shape ``out_shape`` per example fit labels ``y``."""
        want = ((), (1,)) if y.ndim == 1 else (tuple(y.shape[1:]),)
        if out_shape not in want:
            raise ValueError(
                f"bnn: a Bernoulli likelihood needs network outputs of shape "
                f"{' or '.join(map(str, want))} per example for labels `y` of shape {y.shape}; "
                f"the network returns shape {out_shape}"
            )
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise ValueError(f"bnn: Bernoulli labels `y` must be 0 or 1; found {np.unique(y[bad])[:5].tolist()}")


@dataclasses.dataclass(frozen=True)
class Categorical:
    """``y ~ Categorical(softmax(f(x)))``, integer labels in ``[0, K)``; output shape ``(K,)``."""

    n_extra = 0

    def log_prob(self, out, y, extra):
        """``out (B, K)`` logits, ``y (B,)`` labels -> ``(B,)``."""
        logp = jax.nn.log_softmax(out, axis=-1)
        return jnp.take_along_axis(logp, y.astype(jnp.int32)[:, None], axis=-1)[:, 0]

    def log_prior_extra(self, extra):
        """Log prior density of the likelihood's own parameters ``extra`` (0 when it has none)."""
        return 0.0

    def init_extra(self):
        """Initial value of ``extra`` (shape ``(n_extra,)``)."""
        return jnp.zeros((0,))

    def check(self, out_shape, y):
        """Raise ``ValueError`` unless network outputs of shape ``out_shape`` per example fit labels ``y``."""
        if len(out_shape) != 1 or out_shape[0] < 2:
            raise ValueError(
                f"bnn: a categorical likelihood needs K >= 2 logits per example (shape (K,)), "
                f"the network returns shape {out_shape}"
            )
        k = out_shape[0]
        fractional = np.mod(y, 1) != 0
        if fractional.any():
            raise ValueError(
                f"bnn: categorical labels `y` must be integers; found {int(fractional.sum())} that are "
                f"not, e.g. {y[fractional][0].item()!r}"
            )
        if y.min() < 0 or y.max() >= k:
            raise ValueError(
                f"bnn: categorical labels `y` must be integers in [0, {k}) (the network has {k} "
                f"outputs); found values in [{y.min()}, {y.max()}]"
            )


def make_likelihood(name: str | Any, noise: float | None = None):
    """A likelihood by name: ``"gaussian"`` (``noise=None`` learns it), ``"heteroscedastic"``
    (a Gaussian whose noise the network predicts: two outputs), ``"bernoulli"``, ``"categorical"``."""
    if not isinstance(name, str):
        if not all(hasattr(name, a) for a in ("log_prob", "n_extra", "check")):
            raise TypeError(f"bnn: `likelihood` must be one of {LIKELIHOODS} or a likelihood object, got {name!r}")
        return name
    if name == "gaussian":
        if noise is not None:
            check_positive("bnn", noise=noise)
        return Gaussian(None if noise is None else float(noise))
    if noise is not None:
        raise ValueError(
            f"bnn: `noise` is the Gaussian likelihood's standard deviation; a {name!r} likelihood "
            "has none (leave it out)"
        )
    if name == "heteroscedastic":
        return HeteroscedasticGaussian()
    if name == "bernoulli":
        return Bernoulli()
    if name == "categorical":
        return Categorical()
    raise ValueError(f"bnn: `likelihood` must be one of {LIKELIHOODS}, got {name!r}")


# --------------------------------------------------------------------------- prior
@dataclasses.dataclass(frozen=True)
class GaussianPrior:
    """``w ~ N(0, scale^2)`` independently; ``hierarchical=True``: one precision per layer
    (per parameter array) ``lambda_l ~ Gamma(a, b)`` (``precision_prior``), learned with the
    weights (its log is an extra coordinate of ``theta``)."""

    scale: float = 1.0
    hierarchical: bool = False
    precision_prior: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self):
        check_positive("bnn: prior", scale=self.scale)


# --------------------------------------------------------------------------- the model
@dataclasses.dataclass(frozen=True, eq=False)
class BNN:
    """A Bayesian neural network on a flat parameter vector (built by :func:`model`).

    Attributes:
        forward: ``(weights (n_weights,), x (B, *in)) -> out (B, *out)``.
        init_weights: the network's own initial weights, flat ``(n_weights,)``.
        unravel: flat weights -> the network's parameter pytree.
        segments: ``(n_weights,)`` int, which parameter array (layer) each weight belongs to.
        likelihood, prior: as given.
    """

    forward: Callable
    init_weights: Array
    unravel: Callable
    segments: np.ndarray
    segment_names: tuple[str, ...]
    likelihood: Any
    prior: GaussianPrior

    @property
    def n_weights(self) -> int:
        return int(self.init_weights.shape[0])

    @property
    def n_layers(self) -> int:
        return len(self.segment_names)

    @property
    def n_extra(self) -> int:
        return self.likelihood.n_extra + (self.n_layers if self.prior.hierarchical else 0)

    @property
    def dim(self) -> int:
        """Length of ``theta``: weights, then likelihood and prior hyper-parameters."""
        return self.n_weights + self.n_extra

    def split(self, theta):
        """``theta (dim,) -> (weights, likelihood extras, prior extras)``."""
        nw, nl = self.n_weights, self.likelihood.n_extra
        return theta[:nw], theta[nw : nw + nl], theta[nw + nl :]

    def init_theta(self) -> Array:
        """The network's initial weights, extras at their hyper-prior's centre."""
        prior_extra = jnp.full((self.n_extra - self.likelihood.n_extra,), -2.0 * math.log(self.prior.scale))
        return jnp.concatenate([self.init_weights, self.likelihood.init_extra(), prior_extra])

    def reinitialised(self, key) -> BNN:
        """The same model started from other initial weights: each parameter array's initial
        values permuted at random. For the usual i.i.d. initialisers (uniform, normal,
        Glorot, LeCun; constant biases) that is a fresh draw from the same initialiser,
        without knowing which one the network used. The start of an ensemble member."""
        seg = np.asarray(self.segments)
        perm = np.arange(self.n_weights)
        for layer, k in enumerate(jax.random.split(key, self.n_layers)):
            idx = np.flatnonzero(seg == layer)
            perm[idx] = idx[np.asarray(jax.random.permutation(k, len(idx)))]
        return dataclasses.replace(self, init_weights=self.init_weights[perm])

    # -- densities -------------------------------------------------------------------
    def log_prior(self, theta) -> Array:
        """``log p(theta)`` (weights, noise and hyper-parameters), a scalar."""
        w, lik_extra, prior_extra = self.split(theta)
        p = self.prior
        if p.hierarchical:
            seg = jnp.asarray(self.segments)
            sq = jax.ops.segment_sum(w**2, seg, num_segments=self.n_layers)
            counts = jnp.asarray(np.bincount(self.segments, minlength=self.n_layers), w.dtype)
            lw = jnp.sum(
                0.5 * counts * prior_extra - 0.5 * jnp.exp(prior_extra) * sq
            ) - 0.5 * self.n_weights * math.log(2 * math.pi)
            lw = lw + jnp.sum(_gamma_log_prior_of_log(prior_extra, *p.precision_prior))
        else:
            lw = -0.5 * jnp.sum(w**2) / p.scale**2 - self.n_weights * (math.log(p.scale) + 0.5 * math.log(2 * math.pi))
        return lw + self.likelihood.log_prior_extra(lik_extra)

    def log_likelihood_terms(self, theta, x, y) -> Array:
        """Per-example ``log p(y_i | x_i, theta)``, shape ``(B,)``."""
        w, lik_extra, _ = self.split(theta)
        return self.likelihood.log_prob(self.forward(w, x), y, lik_extra)

    def log_likelihood(self, theta, x, y) -> Array:
        """``sum_i log p(y_i | x_i, theta)`` over the batch, a scalar."""
        return jnp.sum(self.log_likelihood_terms(theta, x, y))

    def log_joint(self, theta, x, y, scale=1.0) -> Array:
        """``log p(theta) + scale * log p(y | x, theta)``; ``scale = N / B`` makes a
        minibatch of ``B`` of ``N`` examples an unbiased estimate of the full log joint."""
        return self.log_prior(theta) + scale * self.log_likelihood(theta, x, y)

    def log_likelihood_samples(self, thetas, x, y) -> Array:
        """``thetas (S, dim)`` -> per-example log-likelihoods ``(S, B)`` (vmap over samples)."""
        return jax.vmap(self.log_likelihood_terms, in_axes=(0, None, None))(thetas, x, y)

    def outputs(self, thetas, x) -> Array:
        """Network outputs for each weight sample: ``(S, dim), (B, *in) -> (S, B, *out)``."""
        return jax.vmap(lambda t: self.forward(self.split(t)[0], x))(thetas)

    # -- checks and targets ----------------------------------------------------------
    def check_data(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Validate ``x (N, *in)`` and ``y (N,)`` against the network and likelihood
        (finite values, equal lengths, output shape, label range); returns float32/int arrays.
        Raises ValueError naming the problem, before anything is compiled."""
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim < 1 or x.shape[0] == 0:
            raise ValueError(f"bnn: `x` must be an array of shape (N, ...) with N >= 1, got shape {x.shape}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 and not (isinstance(self.likelihood, Bernoulli) and y.ndim > 1):
            raise ValueError(
                f"bnn: `y` must have shape (N,), got {y.shape} (only a Bernoulli likelihood takes y (N, *event))"
            )
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"bnn: `x` and `y` must have the same length, got {x.shape[0]} and {y.shape[0]}")
        for name, a in (("x", x), ("y", y)):
            if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
                raise TypeError(f"bnn: `{name}` must be numeric, got dtype {a.dtype}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"bnn: `{name}` holds {int(np.sum(~np.isfinite(a)))} non-finite value(s) (NaN or inf)")
        shape = (3, *x.shape[1:])  # a batch of 3: an `apply` that mixes or drops the batch axis shows
        try:
            out = jax.eval_shape(
                self.forward,
                jax.ShapeDtypeStruct((self.n_weights,), jnp.float32),
                jax.ShapeDtypeStruct(shape, jnp.float32),
            )
        except Exception as e:  # noqa: BLE001  (re-raised with context)
            raise ValueError(f"bnn: the network failed on inputs of shape {shape}: {e}") from e
        if out.ndim < 1 or out.shape[0] != 3:
            raise ValueError(
                f"bnn: the network maps a batch of shape {shape} to outputs of shape {out.shape}; it must "
                "keep the batch axis first (one output per example)"
            )
        self.likelihood.check(tuple(out.shape[1:]), y)
        y = y.astype(np.int32) if isinstance(self.likelihood, Categorical) else y.astype(np.float32)
        return x.astype(np.float32), y

    def target(self, x, y, name: str = "bnn") -> Target:
        """The full-batch posterior ``p(theta | x, y)`` as a :class:`flowpost.Target`
        (for :func:`flowpost.fit` on small data)."""
        x, y = self.check_data(x, y)
        x, y = jnp.asarray(x), jnp.asarray(y)

        def constrain(theta):
            w, lik_extra, prior_extra = self.split(theta)
            out = {"weights": w}
            if isinstance(self.likelihood, Gaussian) and self.likelihood.noise is None:
                out["noise"] = jnp.exp(-0.5 * lik_extra[0])
            if self.prior.hierarchical:
                out["prior_scale"] = jnp.exp(-0.5 * prior_extra)
            return out

        return Target(lambda t: self.log_joint(t, x, y), self.dim, constrain=constrain, name=name)


def _leaf_names(tree) -> list[str]:
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(p) or "params" for p, _ in paths]


def model(
    network,
    likelihood: str | Any = "gaussian",
    prior: float | GaussianPrior = 1.0,
    *,
    params=None,
    batched: bool | None = None,
    noise: float | None = None,
) -> BNN:
    """Turn a network into a Bayesian model over its flattened weights.

    Args:
        network: an Equinox module called on ONE example (``net(x_i) -> out_i``; its
            inexact-array leaves are the weights), or a function ``apply(params, x)``
            with ``params`` given (Flax style).
        likelihood: ``"gaussian"`` (learned noise unless ``noise=`` is given),
            ``"bernoulli"``, ``"categorical"``, or a likelihood object.
        prior: the prior's standard deviation (a float), or a :class:`GaussianPrior`
            (``hierarchical=True`` for per-layer learned scales).
        params: the parameter pytree of an ``apply`` function.
        batched: whether ``apply`` takes a batch ``(B, *in)`` (default: True for an
            ``apply`` function, False for an Equinox module, which is vmapped).
        noise: a fixed Gaussian noise standard deviation.

    Returns:
        :class:`BNN`.
    """
    lik = make_likelihood(likelihood, noise)
    if isinstance(prior, numbers.Real) and not isinstance(prior, bool):
        check_positive("bnn", prior=prior)
        prior = GaussianPrior(float(prior))
    if not isinstance(prior, GaussianPrior):
        raise TypeError(f"bnn: `prior` must be a positive float (the scale) or a GaussianPrior, got {prior!r}")
    if isinstance(network, eqx.Module) and params is None:
        tree, static = eqx.partition(network, eqx.is_inexact_array)
        call = lambda p, x: eqx.combine(p, static)(x)  # noqa: E731
        batched = False if batched is None else batched
    elif callable(network):
        if params is None:
            raise TypeError("bnn: a plain function `network` is an apply(params, x); pass its `params=` pytree")
        tree, static = eqx.partition(params, eqx.is_inexact_array)
        call = lambda p, x: network(eqx.combine(p, static), x)  # noqa: E731
        batched = True if batched is None else batched
    else:
        raise TypeError(
            f"bnn: `network` must be an Equinox module or an apply(params, x) function, got {type(network).__name__}"
        )
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError("bnn: the network has no inexact (floating-point) parameter arrays")
    flat, unravel = ravel_pytree(tree)
    tree_dtype = flat.dtype  # mixed leaf dtypes (float32 and float64 under x64) ravel to the wider one
    flat = flat.astype(jnp.float32)
    segments = np.repeat(np.arange(len(leaves)), [int(np.prod(l.shape)) for l in leaves])

    def forward(w, x):
        p = unravel(w.astype(tree_dtype))
        return call(p, x) if batched else jax.vmap(lambda xi: call(p, xi))(x)

    return BNN(forward, flat, unravel, segments, tuple(_leaf_names(tree)), lik, prior)


def mlp(key, n_in: int, n_out: int = 1, hidden=(50,), activation=jax.nn.relu) -> eqx.nn.MLP:
    """An Equinox MLP with the given hidden widths (the UCI benchmark uses one layer of 50)."""
    hidden = tuple(hidden)
    if not hidden:
        return eqx.nn.MLP(n_in, n_out, 0, 0, key=key)
    if len(set(hidden)) != 1:
        raise ValueError(f"bnn.mlp: hidden widths must be equal (Equinox MLP), got {hidden}")
    return eqx.nn.MLP(n_in, n_out, hidden[0], len(hidden), activation=activation, key=key)
