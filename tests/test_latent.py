"""Latent-variable families (flowpost.vi.latent): bounds, fits, the importance-weighted
forward-KL objective and its bias, honest diagnostics."""

import importlib
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowpost as fp
from flowpost import flows as F
from flowpost.vi import latent, objectives

warnings.filterwarnings("ignore", category=FutureWarning)

FAMILIES = ["sivi", "hierarchical"]


def perturbed(q, key, scale=0.7):
    """``q`` with random last-layer decoder weights: a non-Gaussian q whose bounds are loose."""
    last = q.decoder.net.layers[-1]
    kw, kb = jax.random.split(key)
    return eqx.tree_at(lambda m: (m.decoder.net.layers[-1].weight, m.decoder.net.layers[-1].bias), q,
                       (scale * jax.random.normal(kw, last.weight.shape), 0.3 * jax.random.normal(kb, last.bias.shape)))


def std_normal_log_p(x):
    return -0.5 * jnp.sum(x**2, -1) - jnp.log(2 * jnp.pi)


@pytest.mark.parametrize("family", FAMILIES)
def test_bound_is_a_lower_bound_on_the_elbo(family):
    q = perturbed(fp.vi.families.make(family, 2, key=jax.random.key(1)), jax.random.key(2), scale=0.4)
    n, key = 5000, jax.random.key(3)
    # the model's ELBO from a large-K estimate of log q = log E_p(eps) q(theta | eps) (the
    # same decoder as a semi-implicit family), sandwiched: the extended estimate (E >= log q)
    # gives a lower value, the IWAE estimate at the same draws (E <= log q) a higher one
    ref = latent.SemiImplicit(q.decoder, q.whiten, q.dim, q.latent_dim, q.k, q.eval_k)
    x, lq_hi = jax.jit(lambda k: ref.sample_and_log_prob(k, n, k=3000))(key)
    lq_lo = jax.jit(lambda x: ref.log_prob(x, jax.random.key(4), 3000))(x)
    lp = std_normal_log_p(x)
    elbo_lo, elbo_hi = float(jnp.mean(lp - lq_hi)), float(jnp.mean(lp - lq_lo))
    assert elbo_hi - elbo_lo < 0.02, (elbo_lo, elbo_hi)  # the large-K estimate is sharp
    ks = [1, 5, 50] if family == "sivi" else [0, 1, 8]
    bound = jax.jit(lambda k_: q.elbo_bound(std_normal_log_p, key, n, k_)[1], static_argnums=0)
    bounds = [float(bound(k)) for k in ks]  # the same draws for every K (the same key)
    se = float(jnp.std(lp - lq_hi)) / np.sqrt(n)
    for b in bounds:
        assert b <= elbo_hi + 3 * se, (bounds, elbo_lo, elbo_hi)
    assert bounds[0] < elbo_lo - 0.05, (bounds, elbo_lo)  # a small-K bound has a real gap: not vacuous
    assert bounds[0] < bounds[1] < bounds[2], bounds  # tighter with K


def gaussian2():
    return fp.targets.get("gaussian", dim=2, mean=[1.0, -0.5], cov=[[1.0, 0.8], [0.8, 1.5]])


@pytest.mark.parametrize("family", FAMILIES)
def test_family_recovers_correlated_gaussian(family, tmp_path):
    t = gaussian2()
    r = fp.fit(t, family=family, steps=300, key=jax.random.key(0), progress=False)
    x = np.asarray(r.q.sample(jax.random.key(1), 100_000), np.float64)
    assert np.max(np.abs(x.mean(0) - [1.0, -0.5])) < 0.1
    assert np.max(np.abs(np.cov(x.T) - [[1.0, 0.8], [0.8, 1.5]])) < 0.1
    d = r.diagnostics(n=1000)
    assert d["log_q"].startswith(f"estimate: {family} K=")
    assert any("log q is estimated" in w for w in d["warnings"])
    assert abs(d["log_evidence"]) < 0.05  # the target is normalised: E[p / q^] = Z = 1 on the extended space
    back = fp.load(r.save(tmp_path / "fit"))  # saved and rebuilt by name
    assert np.allclose(back.q.sample(jax.random.key(2), 4), r.q.sample(jax.random.key(2), 4))


def mixture2():
    """0.3 N((-2.5, 0), 0.5 I) + 0.7 N((2.5, 0), 0.5 I)."""
    m = jnp.array([[-2.5, 0.0], [2.5, 0.0]])
    lw = jnp.log(jnp.array([0.3, 0.7]))

    def log_prob(x):
        return jax.nn.logsumexp(-jnp.sum((x - m) ** 2, -1) / (2 * 0.5) - jnp.log(2 * jnp.pi * 0.5) + lw)

    return fp.Target(log_prob, 2, name="mixture2")


@pytest.mark.parametrize("family", FAMILIES)
def test_iwfkl_recovers_both_modes_where_reverse_kl_keeps_one(family):
    t = mixture2()
    weight = {}
    for objective in ("iwfkl", "elbo"):
        steps = 400 if objective == "iwfkl" else 100  # reverse KL from the Laplace start: stays put at once
        r = fp.fit(t, family=family, objective=objective, steps=steps, key=jax.random.key(0), progress=False)
        x = np.asarray(r.q.sample(jax.random.key(1), 50_000))
        weight[objective] = float(np.mean(x[:, 0] > 0))
    assert abs(weight["iwfkl"] - 0.7) < 0.1, weight
    assert weight["elbo"] > 0.95, weight  # the same family and start, reverse KL: the mode of the Laplace start


def test_iwfkl_gradient_bias_shrinks_with_k_and_with_draws():
    """The bias of the iwfkl gradient (decoder parameters) against the exact
    ``E_p[grad log q]`` (Gauss-Hermite quadrature over eps and over theta, 1-D)."""
    q = latent.hierarchical(1, key=jax.random.key(5), reverse_layers=0)
    q = perturbed(q, jax.random.key(6), scale=1.0)
    m_p, s_p = 0.5, 0.8

    def log_p(x):
        return (-0.5 * ((x[..., 0] - m_p) / s_p) ** 2 - jnp.log(s_p) - 0.5 * jnp.log(2 * jnp.pi))

    e_nodes, e_w = np.polynomial.hermite_e.hermegauss(120)
    t_nodes, t_w = np.polynomial.hermite_e.hermegauss(60)
    e_nodes, e_w = jnp.asarray(e_nodes[:, None], jnp.float32), jnp.asarray(e_w / e_w.sum(), jnp.float32)
    theta = jnp.asarray(m_p + s_p * t_nodes[:, None], jnp.float32)
    t_w = jnp.asarray(t_w / t_w.sum(), jnp.float32)

    def exact_log_q(decoder, x):  # x (m, 1)
        mu, sigma = jax.vmap(decoder)(e_nodes)  # (nodes, 1)
        comp = latent._normal_logpdf(x[:, None, :], mu[None], sigma[None])  # (m, nodes)
        return jax.nn.logsumexp(comp + jnp.log(e_w), 1)

    flat = lambda g: jnp.concatenate([a.ravel() for a in jax.tree.leaves(eqx.filter(g, eqx.is_inexact_array))])  # noqa: E731
    g_star = flat(eqx.filter_grad(lambda d: jnp.sum(t_w * exact_log_q(d, theta)))(q.decoder))

    def estimate(n, k, proposal, reps=200):
        def one(key):
            def neg_loss(decoder):
                qq = eqx.tree_at(lambda m: m.decoder, q, decoder)
                return -objectives.iwfkl(qq, log_p, key, n, k=k, proposal=proposal, defensive=0.0)[0]
            return flat(eqx.filter_grad(neg_loss)(q.decoder))

        g = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(n * 1000 + k), reps))
        bias = float(jnp.linalg.norm(jnp.mean(g, 0) - g_star))
        noise = float(jnp.linalg.norm(jnp.std(g, 0))) / np.sqrt(reps)
        return bias, noise

    # (1) the bound in place of log q: exact draws from p (a flow equal to p), so no weighting
    # bias; what remains is the ELBO gap's, O(1/K), and it does not shrink with n
    exact_p = F.Flow(F.TriangularAffine(1, loc=jnp.array([m_p]), scale=s_p))
    by_k = {k: estimate(64, k, exact_p) for k in (1, 32)}
    (b1, n1), (b32, _) = by_k[1], by_k[32]
    assert b1 > 5 * n1, by_k  # a real bias at K = 1
    assert b32 < 0.35 * b1, by_k
    assert estimate(128, 1, exact_p)[0] > 0.7 * b1  # more draws do not remove it
    # (2) self-normalised weights from the current q (its extended-space estimate of log q):
    # an O(1/n) bias, shrinking with the number of draws (K large, so (1) is small)
    by_n = {n: estimate(n, 32, None) for n in (2, 64)}
    (c2, m2), (c64, _) = by_n[2], by_n[64]
    print(f"iwfkl gradient bias (norm, MC se): by K at n=64 {by_k}; by n at K=32 {by_n}")
    assert c2 > 5 * m2, by_n
    assert c64 < 0.35 * c2, by_n


def test_flow_diagnostics_say_exact_and_latent_objectives_refuse_clearly():
    q = fp.vi.families.make("sivi", 2)
    lp = jax.vmap(std_normal_log_p)
    with pytest.raises(ValueError, match="needs log q exactly"):
        objectives.iwelbo(q, lp, jax.random.key(0), 8)
    with pytest.raises(ValueError, match="takes the options .* for a flow"):
        objectives.get("elbo", k=4)(fp.vi.families.make("fullrank", 2), lp, jax.random.key(0), 8)
    # on a flow, iwfkl is fkl (log q exact): the same loss from the same draws
    f = fp.vi.families.make("fullrank", 2, loc=jnp.array([0.3, 0.0]))
    a = objectives.iwfkl(f, lp, jax.random.key(0), 64)
    b = objectives.fkl(f, lp, jax.random.split(jax.random.key(0))[0], 64)
    assert abs(float(a[0]) - float(b[0])) < 1e-5 and abs(float(a[0])) > 0.1
    trace = importlib.import_module("flowpost.vi.fit").Trace.of(None)  # (fp.vi.fit is the function)
    for q, note in ((f, "exact"), (q, "estimate: sivi K=1000")):
        r = fp.FitResult(q=q, target=gaussian2(), trace=trace, steps=0, message="")
        assert r.diagnostics(n=100)["log_q"].startswith(note)
