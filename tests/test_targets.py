"""Built-in targets, posteriordb posteriors and from_numpyro, checked against independent code."""

import math
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import potential_energy
from scipy import integrate, stats

import flowpost as fp
from flowpost.vi import targets
from flowpost.vi.target import flatten_draws
from flowpost.vi.targets import posteriordb as pdb

DATA = pathlib.Path(os.environ.get("FLOWPOST_DATA", "")).expanduser()
needs_data = pytest.mark.skipif(
    not (DATA / "posteriordb").is_dir(),
    reason=f"data folder not found at FLOWPOST_DATA={DATA!s} (set it to the project's shared/data)",
)
PDB = list(pdb.POSTERIORS)


# ---------------------------------------------------------------- registry


def test_names_and_errors():
    assert targets.names()[:9] == ["u1", "u2", "u3", "u4", "banana", "funnel", "mixture", "gaussian", "german_credit"]
    assert set(PDB) <= set(targets.names()) and len(targets.names()) == 17
    with pytest.raises(ValueError, match="did you mean|Did you mean"):
        targets.get("funnell")
    with pytest.raises(TypeError, match="unexpected keyword"):
        targets.get("u1", dim=3)
    assert targets.Target is targets.get("u1").__class__


# ---------------------------------------------------------------- 2-D energies


def test_energy_log_z():
    # U2-U4: the z2-integral is a Gaussian (sum) of fixed width, z1 is uniform on [-4, 4]
    # plus two half-Gaussian walls of sd 0.1, so Z is known in closed form.
    box = 8 + 0.1 * math.sqrt(2 * math.pi)
    s2pi = math.sqrt(2 * math.pi)
    exact = {"u2": 0.4 * s2pi * box, "u3": 2 * 0.35 * s2pi * box, "u4": (0.4 + 0.35) * s2pi * box}
    for name, z in exact.items():
        assert abs(targets.get(name).log_z - math.log(z)) < 1e-4, name
    # U1 in polar coordinates by adaptive quadrature (scipy), independent of the grid.
    def p(r, th):
        z1 = r * math.cos(th)
        a, b = math.exp(-0.5 * ((z1 - 2) / 0.6) ** 2), math.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
        return r * math.exp(-0.5 * ((r - 2) / 0.4) ** 2) * (a + b)

    z1, _ = integrate.dblquad(p, 0, 2 * math.pi, 0, 6, epsabs=1e-10)
    assert abs(targets.get("u1").log_z - math.log(z1)) < 1e-4


def test_energy_values():
    t1, t4 = targets.get("u1"), targets.get("u4")
    z = jnp.array([1.0, -0.5])
    r = math.hypot(1.0, -0.5)
    u1 = 0.5 * ((r - 2) / 0.4) ** 2 - math.log(math.exp(-0.5 * (1 / 0.6) ** 2) + math.exp(-0.5 * (3 / 0.6) ** 2))
    lp1, lp4 = jax.jit(t1.log_prob), jax.jit(t4.log_prob)
    assert np.isclose(float(lp1(z)), -u1, rtol=1e-5)
    w1, w3 = math.sin(math.pi / 2), 3 / (1 + math.exp(0.0))
    u4 = -math.log(math.exp(-0.5 * ((-0.5 - w1) / 0.4) ** 2) + math.exp(-0.5 * ((-0.5 - w1 + w3) / 0.35) ** 2))
    assert np.isclose(float(lp4(z)), -u4, rtol=1e-5)
    # outside the box U4 decays like the wall; U1 is finite with a finite gradient at 0
    assert float(lp4(jnp.array([5.0, 0.0]))) < -49
    assert np.all(np.isfinite(jax.jit(jax.grad(t1.log_prob))(jnp.zeros(2))))


# ---------------------------------------------------------------- toy targets with exact draws


def _stein_z(target, u):
    """z-scores of the mean score E_p[grad log p] = 0 over draws u (n, dim)."""
    g = np.asarray(jax.jit(jax.vmap(jax.grad(target.log_prob)))(jnp.asarray(u)))
    return g.mean(0) / (g.std(0) / math.sqrt(len(g)))


def _ref_matrix(target):
    return np.stack([target.reference[n] for n in target.flat_names()], 1)


def test_banana_funnel_mixture_gaussian_densities():
    x = np.array([[1.5, -0.7], [-3.0, 2.0]])
    b = targets.get("banana")
    for xi in x:
        phi = np.array([xi[0], xi[1] + 0.1 * (xi[0] ** 2 - 100)])
        assert np.isclose(jax.jit(b.log_prob)(jnp.asarray(xi)), stats.multivariate_normal([0, 0], np.diag([100, 1])).logpdf(phi), rtol=1e-5)

    f = targets.get("funnel", dim=5)
    u = np.array([0.7, 0.1, -0.4, 1.2, 0.3])
    want = stats.norm(0, 3).logpdf(u[0]) + stats.norm(0, np.exp(u[0] / 2)).logpdf(u[1:]).sum()
    assert np.isclose(jax.jit(f.log_prob)(jnp.asarray(u)), want, rtol=1e-5)
    assert f.flat_names() == ("v", "x[0]", "x[1]", "x[2]", "x[3]") and f.log_z == 0.0

    g = targets.get("gaussian", dim=4, seed=3)
    ref = _ref_matrix(g)
    # a Gaussian's mean and covariance from its log density (Hessian is exact), then scipy
    cov_true = np.linalg.inv(-np.asarray(jax.jit(jax.hessian(g.log_prob))(jnp.zeros(4))))
    mean_true = cov_true @ np.asarray(jax.jit(jax.grad(g.log_prob))(jnp.zeros(4)))
    assert np.allclose(jax.vmap(g.log_prob)(jnp.asarray(ref[:3])), stats.multivariate_normal(mean_true, cov_true).logpdf(ref[:3]), rtol=1e-4)
    # ... and its reference draws are draws of that Gaussian
    assert np.allclose(ref.mean(0), mean_true, atol=5 * np.sqrt(np.diag(cov_true) / len(ref)))
    assert np.allclose(np.diag(np.cov(ref.T)), np.diag(cov_true), rtol=0.06)
    cm = targets.get("gaussian", dim=2, mean=[1.0, 2.0], cov=[[2.0, 0.5], [0.5, 1.0]])
    assert np.isclose(jax.jit(cm.log_prob)(jnp.zeros(2)), stats.multivariate_normal([1, 2], [[2, 0.5], [0.5, 1]]).logpdf([0, 0]), rtol=1e-5)
    k1, k2 = targets.get("gaussian", dim=3, key=jax.random.key(1)), targets.get("gaussian", dim=3, key=jax.random.key(1))
    assert np.array_equal(k1.reference["theta[0]"], k2.reference["theta[0]"])
    with pytest.raises(ValueError, match="positive definite"):
        targets.get("gaussian", dim=2, cov=[[1.0, 2.0], [2.0, 1.0]])

    # mixture: integrates to one (grid), and the exact draws satisfy Stein's identity
    m = targets.get("mixture")
    h = 0.02
    grid = np.stack(np.meshgrid(np.arange(-8, 8, h) + h / 2, np.arange(-8, 8, h) + h / 2), -1).reshape(-1, 2)
    assert abs(np.exp(np.asarray(jax.jit(jax.vmap(m.log_prob))(grid), np.float64)).sum() * h * h - 1) < 1e-3
    for t in (b, f, g, m):
        z = _stein_z(t, _ref_matrix(t)[:4000])
        assert np.all(np.abs(z) < 4.5), (t.name, z)


@needs_data
def test_german_credit():
    t = targets.get("german_credit")
    assert t.dim == 25 and t.flat_names() == tuple(f"beta[{i}]" for i in range(25))
    raw = np.loadtxt(DATA / "classification/german.data-numeric")
    x = (raw[:, :-1] - raw[:, :-1].mean(0)) / raw[:, :-1].std(0)
    x = np.hstack([x, np.ones((1000, 1))])
    y = raw[:, -1] == 2

    def independent(beta):
        return stats.bernoulli(1 / (1 + np.exp(-(x @ beta)))).logpmf(y).sum() + stats.norm.logpdf(beta).sum()

    for seed in range(2):
        beta = 0.3 * np.random.default_rng(seed).standard_normal(25)
        assert np.isclose(float(jax.jit(t.log_prob)(jnp.asarray(beta, jnp.float32))), independent(beta), rtol=1e-5)


# ---------------------------------------------------------------- posteriordb: independent NumPyro models

S = numpyro.sample


def _es(d):
    tt = S("tt", dist.Normal(0, 1).expand([8]))
    mu, tau = S("mu", dist.Normal(0, 5)), S("tau", dist.HalfCauchy(5))
    S("y", dist.Normal(mu + tau * tt, d["sigma"]), obs=d["y"])


def _kilp(d):
    a, b = S("alpha", dist.Normal(d["pmualpha"], d["psalpha"])), S("beta", dist.Normal(d["pmubeta"], d["psbeta"]))
    sigma = S("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
    S("y", dist.Normal(a + b * d["x"], sigma), obs=d["y"])


def _sblrc(d):
    beta, sigma = S("beta", dist.Normal(0, 10).expand([5])), S("sigma", dist.HalfNormal(10))
    S("y", dist.Normal(d["X"] @ beta, sigma), obs=d["y"])


def _ark(d):
    a, beta, sigma = S("alpha", dist.Normal(0, 10)), S("beta", dist.Normal(0, 10).expand([5])), S("sigma", dist.HalfCauchy(2.5))
    y = d["y"]  # sum_k beta[k] y[t-k] for t = 6..T (1-based) is a slice of the full convolution
    mean = a + jnp.convolve(y, beta, mode="full")[4 : len(y) - 1]
    S("y", dist.Normal(mean, sigma), obs=y[5:])


def _garch(d):
    mu = S("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
    a0 = S("alpha0", dist.ImproperUniform(dist.constraints.positive, (), ()))
    a1 = S("alpha1", dist.Uniform(0, 1))
    b1 = S("beta1", dist.Uniform(0, 1 - a1))
    numpyro.factor("flat_beta1", jnp.log(1 - a1))  # Stan's beta1 is flat, not Uniform's 1/(1-alpha1)
    y = d["y"]

    def step(sd, y_prev):
        sd = jnp.sqrt(a0 + a1 * (y_prev - mu) ** 2 + b1 * sd**2)
        return sd, sd

    _, sig = jax.lax.scan(step, jnp.asarray(d["sigma1"], y.dtype), y[:-1])
    S("y", dist.Normal(mu, jnp.concatenate([jnp.asarray([d["sigma1"]]), sig])), obs=y)


def _gp_K(rho, alpha, x):
    return alpha**2 * jnp.exp(-((x[:, None] - x[None]) ** 2) / (2 * rho**2)) + 1e-10 * jnp.eye(len(x))


def _gp(d):
    rho, alpha = S("rho", dist.Gamma(25, 4)), S("alpha", dist.HalfNormal(2))
    ft = S("f_tilde", dist.Normal(0, 1).expand([11]))
    f = jnp.linalg.cholesky(_gp_K(rho, alpha, d["x"])) @ ft
    S("k", dist.Poisson(jnp.exp(f)), obs=d["k"])


def _diamonds(d):
    b, c = S("b", dist.Normal(0, 1).expand([24])), S("Intercept", dist.StudentT(3, 8, 10))
    sigma = S("sigma", dist.TruncatedDistribution(dist.StudentT(3, 0, 10), low=0.0))
    xc = d["X"][:, 1:] - d["X"][:, 1:].mean(0)
    S("Y", dist.Normal(c + xc @ b, sigma), obs=d["Y"])


def _gmix(d):
    mu = S("mu", dist.ImproperUniform(dist.constraints.ordered_vector, (), (2,)))
    numpyro.factor("mu_prior", dist.Normal(0, 2).log_prob(mu).sum())
    sigma, theta = S("sigma", dist.HalfNormal(2).expand([2])), S("theta", dist.Beta(5, 5))
    mix = dist.MixtureSameFamily(dist.Categorical(probs=jnp.stack([theta, 1 - theta])), dist.Normal(mu, sigma))
    S("y", mix, obs=d["y"])


# model, data name, u -> NumPyro's unconstrained sites (same bijections as Stan's), derived quantities
INDEPENDENT = {
    "eight_schools-eight_schools_noncentered": (_es, lambda u: {"tt": u[:8], "mu": u[8], "tau": u[9]},
                                                lambda p, d: {"theta": p["mu"] + p["tau"] * p["tt"], "mu": p["mu"], "tau": p["tau"]}),
    "kilpisjarvi_mod-kilpisjarvi": (_kilp, lambda u: {"alpha": u[0], "beta": u[1], "sigma": u[2]}, lambda p, d: p),
    "sblrc-blr": (_sblrc, lambda u: {"beta": u[:5], "sigma": u[5]}, lambda p, d: p),
    "arK-arK": (_ark, lambda u: {"alpha": u[0], "beta": u[1:6], "sigma": u[6]}, lambda p, d: p),
    "garch-garch11": (_garch, lambda u: {"mu": u[0], "alpha0": u[1], "alpha1": u[2], "beta1": u[3]}, lambda p, d: p),
    "gp_pois_regr-gp_pois_regr": (_gp, lambda u: {"rho": u[0], "alpha": u[1], "f_tilde": u[2:]},
                                  lambda p, d: {"rho": p["rho"], "alpha": p["alpha"],
                                                "f": jnp.linalg.cholesky(_gp_K(p["rho"], p["alpha"], d["x"])) @ p["f_tilde"]}),
    "diamonds-diamonds": (_diamonds, lambda u: {"b": u[:24], "Intercept": u[24], "sigma": u[25]}, lambda p, d: p),
    "low_dim_gauss_mix-low_dim_gauss_mix": (_gmix, lambda u: {"mu": u[:2], "sigma": u[2:4], "theta": u[4]}, lambda p, d: p),
}


@needs_data
@pytest.mark.parametrize("name", PDB)
def test_posteriordb_matches_independent_model(name, x64):
    from numpyro.infer.util import constrain_fn

    model, layout, derived = INDEPENDENT[name]
    t = targets.get(name)
    d = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in pdb.load_data(pdb.POSTERIORS[name][0]).items()}
    rng = np.random.default_rng(0)
    u_ref = pdb.unconstrain(name, t.reference, dtype=jnp.float64)
    # three points near the posterior and u = 0 (far out for most models: priors matter there)
    us = u_ref[rng.integers(0, len(u_ref), 3)] + 0.3 * rng.standard_normal((3, t.dim))
    us = jnp.asarray(np.vstack([us, np.zeros(t.dim)]))
    both = jax.jit(jax.vmap(lambda u: (t.log_prob(u), -potential_energy(model, (d,), {}, layout(u)))))
    ours, theirs = map(np.asarray, both(us))
    assert np.ptp(theirs) > 1.0  # the points differ enough for the check to bite
    assert np.allclose(ours - ours[0], theirs - theirs[0], rtol=0, atol=1e-10 * max(1.0, np.abs(theirs).max())), (ours, theirs)
    # constrain agrees with NumPyro's bijections, quantity by quantity
    want = jax.jit(lambda u: derived(constrain_fn(model, (d,), {}, layout(u)), d))(us[1])
    got = jax.jit(t.constrain)(us[1])
    assert set(got) == set(want)
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-12, err_msg=f"{name}: {k}")


@needs_data
@pytest.mark.parametrize("name", PDB)
def test_posteriordb_reference_roundtrip_and_stein(name, x64):
    """Names match; reference draws map to u and back; Stein's identity E[grad log p(u)] = 0 holds."""
    t = targets.get(name)
    assert len(t.reference) == len(t.flat_names()) and set(t.reference) == set(t.flat_names())
    assert all(v.shape == (10000,) for v in t.reference.values())
    u = pdb.unconstrain(name, t.reference)[::4]  # thinned: less autocorrelation, faster
    assert u.shape == (2500, t.dim)
    (lp, g), c = jax.jit(jax.vmap(lambda v: (jax.value_and_grad(t.log_prob)(v), t.constrain(v))))(jnp.asarray(u))
    back = flatten_draws(c)
    assert set(back) == set(t.reference)
    for k, v in back.items():
        np.testing.assert_allclose(v, t.reference[k][::4], rtol=1e-7, atol=1e-9)
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(g))
    g = np.asarray(g)
    z = g.mean(0) / (g.std(0) / math.sqrt(len(g)))
    assert np.all(np.abs(z) < 5), z
    if name == "eight_schools-eight_schools_noncentered":  # power: a missing Jacobian term is detected
        wrong = targets.Target(lambda v: t.log_prob(v) - v[9], t.dim)
        assert abs(_stein_z(wrong, u)[9]) > 20


@needs_data
def test_posteriordb_aliases_and_constraints():
    for name, (_, alias) in pdb.POSTERIORS.items():
        assert targets.get(alias).name == name
    g = targets.get("garch")
    u = 3.0 * np.random.default_rng(0).standard_normal((500, 4))
    c = jax.jit(jax.vmap(g.constrain))(u)
    assert np.all(c["beta1"] > 0) and np.all(c["beta1"] < 1 - c["alpha1"])  # dependent interval, per draw
    m = jax.jit(jax.vmap(targets.get("low_dim_gauss_mix").constrain))(3.0 * np.random.default_rng(1).standard_normal((500, 5)))
    assert np.all(m["mu"][:, 0] < m["mu"][:, 1])


@needs_data
def test_float32_finite_gradients():
    """float32: finite log density and gradient over a wide range of u, every built-in target."""
    for name in targets.names():
        t = targets.get(name)
        u = 3.0 * np.random.default_rng(2).standard_normal((256, t.dim)).astype(np.float32)
        lp, g = jax.jit(jax.vmap(jax.value_and_grad(t.log_prob)))(u)
        assert lp.dtype == jnp.float32
        assert np.all(np.isfinite(lp)) and np.all(np.isfinite(g)), name


# ---------------------------------------------------------------- from_numpyro


def _normal_normal(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.deterministic("two_mu", 2 * mu)
    with numpyro.plate("n", y.shape[0]):
        numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


def test_from_numpyro_matches_hand_written():
    y = jnp.array([0.3, -1.2, 2.0, 0.8])
    t = targets.from_numpyro(_normal_normal, y)
    assert t.dim == 2 and t.name == "_normal_normal"
    u = np.array([[0.2, -0.1], [1.5, 0.7]])
    lp = jax.jit(jax.vmap(t.log_prob))(jnp.asarray(u))
    for (mu, s), got in zip(u, lp):
        sigma = math.exp(s)
        want = (stats.norm(0, 10).logpdf(mu) + stats.halfnorm(scale=2).logpdf(sigma) + s
                + stats.norm(mu, sigma).logpdf(np.asarray(y)).sum())
        assert np.isclose(float(got), want, rtol=1e-5)
    c = jax.jit(t.constrain)(jnp.asarray(u[1]))
    assert list(c) == ["mu", "sigma", "two_mu"]
    assert np.allclose([c["mu"], c["sigma"], c["two_mu"]], [1.5, math.exp(0.7), 3.0], rtol=1e-6)
    assert t.flat_names() == ("mu", "sigma", "two_mu")
    g = jax.jit(jax.vmap(jax.grad(t.log_prob)))(jnp.ones((3, 2)))
    assert g.shape == (3, 2) and np.all(np.isfinite(g))


def test_from_numpyro_float64(x64):
    t = targets.from_numpyro(_normal_normal, np.array([0.3, -1.2]))
    assert jax.jit(t.log_prob)(jnp.zeros(2, jnp.float64)).dtype == jnp.float64


def test_from_numpyro_dependent_support():
    def model():
        a = numpyro.sample("a", dist.Uniform(0.0, 1.0))
        numpyro.sample("b", dist.Uniform(0.0, 1.0 - a))

    t = targets.from_numpyro(model)
    c = jax.jit(jax.vmap(t.constrain))(3.0 * np.random.default_rng(0).standard_normal((200, 2)))
    assert np.all(c["b"] < 1 - c["a"]) and np.all(c["b"] > 0)


def test_from_numpyro_missing_data_is_proper():
    """``obs_mask`` imputation: the ``y_unobserved`` site has the data's full shape but only
    its missing entries enter the density. The observed ones were improper directions
    (before: dim 21, k-hat 1.5, imputed values around 2e4); now u holds mu and the missing
    entries only, and the fit matches the conjugate answer."""
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.normal(size=20), jnp.float32)
    missing = np.zeros(20, bool)
    missing[[2, 7, 11]] = True

    def model():
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("n", 20):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y, obs_mask=jnp.asarray(~missing))

    t = targets.from_numpyro(model)
    assert t.dim == 1 + missing.sum()
    # log p(u) = N(mu; 0, 10) + sum_observed N(y_i; mu, 1) + sum_missing N(y_i; mu, 1)
    u = jnp.asarray([0.4, -1.0, 0.5, 2.0])  # keys sorted: mu, y_unobserved
    ys = np.asarray(y).copy()
    ys[missing] = [-1.0, 0.5, 2.0]
    want = stats.norm(0, 10).logpdf(0.4) + stats.norm(0.4, 1).logpdf(ys).sum()
    assert np.isclose(float(t.log_prob(u)), want, rtol=1e-5)
    c = t.constrain(u)
    np.testing.assert_allclose(np.asarray(c["y"]), ys, rtol=1e-6)  # data where observed, u where missing
    r = fp.fit(t, steps=500, key=jax.random.key(0), progress=False)
    d = r.sample(jax.random.key(1), 4000)
    n_obs = int((~missing).sum())
    post_sd = 1 / math.sqrt(n_obs + 0.01)
    assert abs(d["mu"].mean() - float(y[~missing].sum()) / (n_obs + 0.01)) < 0.1 * post_sd
    assert abs(math.log(d["mu"].std() / post_sd)) < 0.1
    assert abs(math.log(d["y"][:, missing].std(0).mean() / math.sqrt(1 + post_sd**2))) < 0.1
    assert r.diagnostics()["khat"] < 0.5


def test_from_numpyro_errors():
    def discrete():
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=0.5)

    def observed_only():
        numpyro.sample("x", dist.Normal(0.0, 1.0), obs=0.5)

    def broken(y):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match=r"discrete latent sites \['z'\]"):
        targets.from_numpyro(discrete)
    with pytest.raises(ValueError, match="no latent"):
        targets.from_numpyro(observed_only)
    with pytest.raises(ValueError, match="RuntimeError: boom"):
        targets.from_numpyro(broken, 1.0)

    def subsampled(x):  # not a fixed subsample: log_prob reads every row, fit reads batches (rows)
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        with numpyro.plate("N", x.shape[0], subsample_size=10) as idx:
            numpyro.sample("obs", dist.Normal(mu, 1.0), obs=x[idx])

    x = jnp.linspace(-1.0, 3.0, 100)
    t = targets.from_numpyro(subsampled, x)
    assert dict(t.rows.sizes) == {"N": (100, 10)}
    full = jax.scipy.stats.norm.logpdf(0.5, 0.0, 10.0) + jnp.sum(jax.scipy.stats.norm.logpdf(x, 0.5, 1.0))
    np.testing.assert_allclose(t.log_prob(jnp.array([0.5])), full, rtol=1e-5)
