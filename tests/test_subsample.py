"""Data subsampling with control variates (doubly stochastic VI): the estimate is unbiased,
its variance falls by orders of magnitude near the mode, and a subsampled fit of a
logistic regression matches full-data NUTS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowpost as fp
from flowpost.vi import subsample

N, D, B = 2000, 3, 100


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    x[:, 0] = 1.0
    y = (rng.random(N) < 1 / (1 + np.exp(-(x @ np.array([-0.5, 1.0, -2.0]))))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def log_lik(w, row):
    x, y = row
    logit = x @ w
    return y * logit - jnp.logaddexp(0.0, logit)


def prior(w):
    return -0.5 * jnp.sum(w**2) / 25.0


def rows_target():
    return fp.targets.from_rows(log_lik, data(), D, log_prior=prior, batch_size=B, name="logistic")


def numpyro_model(x, y=None, batch=None):
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0, 5).expand([D]).to_event(1))
    with numpyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        numpyro.sample("y", dist.Bernoulli(logits=x[idx] @ w), obs=None if y is None else y[idx])


def test_estimate_is_unbiased_and_control_variates_cut_its_variance():
    t = rows_target()
    mode = fp.vi.laplace(t.log_prob, D)
    u = mode.mode + mode.chol @ jnp.array([1.0, -0.5, 0.8])  # about one posterior sd from the mode
    cv = subsample.taylor_estimator(t.rows, t.log_prob, mode.mode)
    naive = subsample.naive_estimator(t.rows)
    keys = jax.random.split(jax.random.key(0), 4000)
    draw = jax.vmap(t.rows.draw)(keys)
    with_cv = jax.vmap(lambda idx: cv(u, idx))(draw)
    plain = jax.vmap(lambda idx: naive(u, idx))(draw)
    full = float(t.log_prob(u))
    for est in (with_cv, plain):  # unbiased: the mean of 4000 batches within 4 standard errors
        assert abs(float(jnp.mean(est)) - full) < 4 * float(jnp.std(est)) / np.sqrt(len(est)) + 1e-3 * abs(full)
    ratio = float(jnp.var(plain) / jnp.var(with_cv))
    assert ratio > 100, ratio  # the Taylor remainder is O(|u - m|^3) per row


def test_full_data_log_prob_of_a_subsampled_numpyro_plate():
    x, y = data()
    t = fp.targets.from_numpyro(numpyro_model, x, y, batch=B)
    assert t.rows is not None and dict(t.rows.sizes) == {"data": (N, B)}
    full = fp.targets.from_numpyro(numpyro_model, x, y)  # no subsample_size: all rows
    assert full.rows is None
    w = jnp.array([0.1, -0.3, 0.7])
    np.testing.assert_allclose(t.log_prob(w), full.log_prob(w), rtol=1e-5)
    # a batch's estimate carries the plate's N / B scale
    idx = {"data": jnp.arange(B)}
    lik = jnp.sum(jax.vmap(lambda i: log_lik(w, (x[i], y[i])))(jnp.arange(B)))
    prior_w = jnp.sum(jax.scipy.stats.norm.logpdf(w, 0.0, 5.0))
    np.testing.assert_allclose(t.rows.log_prob_batch(w, idx), prior_w + N / B * lik, rtol=1e-5)


def test_local_latents_in_a_subsampled_plate_are_refused():
    import numpyro
    import numpyro.distributions as dist

    def model(y):
        with numpyro.plate("rows", y.shape[0], subsample_size=10) as idx:
            z = numpyro.sample("z", dist.Normal(0, 1))
            numpyro.sample("y", dist.Normal(z, 1), obs=y[idx])

    with pytest.raises(ValueError, match="latent site 'z' lies inside plate 'rows'"):
        fp.targets.from_numpyro(model, jnp.zeros(50))


@pytest.fixture(scope="module")
def nuts_reference():
    from numpyro.infer import MCMC, NUTS

    x, y = data()
    mcmc = MCMC(NUTS(numpyro_model), num_warmup=500, num_samples=2000, progress_bar=False)
    mcmc.run(jax.random.key(1), x, y)
    w = np.asarray(mcmc.get_samples()["w"])
    return {f"w[{i}]": w[:, i] for i in range(D)}


@pytest.mark.parametrize("source", ["rows", "numpyro"])
def test_subsampled_fit_matches_full_data_nuts(source, nuts_reference):
    x, y = data()
    t = rows_target() if source == "rows" else fp.targets.from_numpyro(numpyro_model, x, y, batch=B)
    r = fp.fit(t, key=jax.random.key(0), progress=False)
    draws = r.sample(jax.random.key(2), 8000)
    w = np.asarray(draws["theta" if source == "rows" else "w"])
    flat = {f"w[{i}]": w[:, i] for i in range(D)}
    c = fp.vi.compare(flat, nuts_reference)
    assert c["max_abs_z"] < 0.1 and c["max_abs_log_sd"] < 0.1, c


def test_float32_mode_of_many_rows_is_found_by_its_gradient_not_its_value():
    """A float32 log density summed over 10^5 rows (|f| ~ 2e5) resolves its own value only
    to ~0.01-0.1 nats, and L-BFGS's line searches, judged by that value, stopped 13 nats
    below the mode of this hierarchical regression (gradient norm 30, a non-concave
    Hessian in the group scale, 43% of the Laplace draws without a finite density; a
    subsampled fit from there ended 0.11 sd off). Newton steps on the gradient finish it."""
    import numpyro
    import numpyro.distributions as dist

    def model(x, g, y):
        mu = numpyro.sample("mu", dist.Normal(0, 5))
        tau = numpyro.sample("tau", dist.HalfNormal(2.0))
        with numpyro.plate("groups", 20):
            a = numpyro.sample("a", dist.Normal(mu, tau))
        b = numpyro.sample("b", dist.Normal(0, 2).expand([x.shape[1]]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Normal(a[g] + x @ b, sigma), obs=y)

    n = 100_000
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    g = rng.integers(0, 20, n)
    y = (1.0 + 0.7 * rng.normal(size=20))[g] + x @ rng.normal(size=5) + 1.5 * rng.normal(size=n)
    target = fp.targets.from_numpyro(model, jnp.asarray(x), jnp.asarray(g), jnp.asarray(y, jnp.float32))
    log_prob = jax.jit(target.log_prob)
    start = fp.vi.laplace(log_prob, target.dim)
    assert start.mode.dtype == jnp.float32 and "floored" not in start.note, start.note
    assert float(jnp.linalg.norm(jax.grad(log_prob)(start.mode))) < 1.0
    u = start.mode + jax.random.normal(jax.random.key(0), (500, target.dim)) @ start.chol.T
    assert bool(jnp.all(jnp.isfinite(jax.vmap(log_prob)(u))))
