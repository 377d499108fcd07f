"""Exactness of every flow layer: log-determinants against autodiff Jacobians, inverses,
float32 robustness of splines, normalisation, and input validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowpost as fp
from flowpost import flows as F
from flowpost.engine import numpy_rng

DIM, CTX = 5, 3


def randomise(module, key, scale=0.5):
    """Perturb every trainable (inexact) array so that no layer is at its identity init (the
    noise drawn by NumPy from ``key``: eager JAX draws compile a program per shape)."""
    arrays, static = eqx.partition(module, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(arrays)
    rng = numpy_rng(key)
    leaves = [jnp.asarray(np.asarray(a) + scale * rng.standard_normal(a.shape), a.dtype) for a in leaves]
    return eqx.combine(jax.tree.unflatten(tree, leaves), static)


def layer_factories(cond_dim):
    """(name, constructor(key) -> Bijection, has_inverse); conditional where the layer supports it."""
    rqs = F.RationalQuadraticSpline(knots=6, bound=3.0)
    c = cond_dim
    out = [
        ("affine_coupling", lambda k: F.Coupling(k, DIM, F.Affine(), (16,), c), True),
        ("spline_coupling", lambda k: F.Coupling(k, DIM, rqs, (16,), c), True),
        ("maf_affine", lambda k: F.MaskedAutoregressive(k, DIM, F.Affine(), (16, 16), c), True),
        ("maf_spline", lambda k: F.MaskedAutoregressive(k, DIM, rqs, (16,), c), True),
        ("iaf_affine", lambda k: F.Invert(F.MaskedAutoregressive(k, DIM, F.Affine(), (16,), c)), True),
        ("planar", lambda k: F.Planar(k, DIM, c), True),
        ("radial", lambda k: F.Radial(k, DIM, c), True),
        ("sylvester_orthogonal", lambda k: F.Sylvester(k, DIM, "orthogonal", m=3, cond_dim=c), False),
        ("sylvester_householder", lambda k: F.Sylvester(k, DIM, "householder", n_householder=3, cond_dim=c), False),
        ("sylvester_triangular", lambda k: F.Sylvester(k, DIM, "triangular", flip=True, cond_dim=c), False),
        ("scan_realnvp", lambda k: F.Scan.make(
            lambda kk: F.Chain([F.Coupling(kk, DIM, F.Affine(), (8,), c), F.Reverse(DIM)]), k, 3), True),
    ]
    if cond_dim is None:
        out += [
            ("actnorm", lambda k: F.ActNorm(DIM), True),
            ("reverse", lambda k: F.Reverse(DIM), True),
            ("random_permute", lambda k: F.RandomPermute(k, DIM), True),
            ("lu_linear", lambda k: F.LULinear(DIM, k), True),
            ("triangular_affine", lambda k: F.TriangularAffine(DIM), True),
            ("frozen", lambda k: F.Frozen(F.TriangularAffine(DIM)), True),
            ("exp", lambda k: F.Exp(), True),
            ("softplus", lambda k: F.Softplus(), True),
            ("sigmoid", lambda k: F.Sigmoid(), True),
            ("tanh", lambda k: F.Tanh(), True),
            ("affine_elementwise", lambda k: F.AffineElementwise(0.3, 2.0, dim=DIM), True),
            ("chain", lambda k: F.Chain([F.LULinear(DIM, k), F.Planar(k, DIM), F.Softplus()]), True),
        ]
    return out


CASES = [(n, f, inv, c) for c in (None, CTX) for (n, f, inv) in layer_factories(c)]
IDS = [f"{n}-{'ctx' if c else 'noctx'}" for n, _, _, c in CASES]


@pytest.mark.parametrize("name,make,has_inverse,cond_dim", CASES, ids=IDS)
def test_logdet_matches_autodiff_jacobian_and_inverse(x64, name, make, has_inverse, cond_dim):
    key = jax.random.key(1)
    b = randomise(make(jax.random.key(0)), jax.random.key(2))
    kx, kc = jax.random.split(key)
    context = None if cond_dim is None else jax.random.normal(kc, (cond_dim,))
    fwd = eqx.filter_jit(lambda m, v: m.forward(v, context))
    inv = eqx.filter_jit(lambda m, v: m.inverse(v, context))
    jac_fwd = eqx.filter_jit(lambda m, v: jax.jacfwd(lambda u: m.forward(u, context)[0])(v))
    jac_inv = eqx.filter_jit(lambda m, v: jax.jacfwd(lambda u: m.inverse(u, context)[0])(v))
    for x in 1.5 * jax.random.normal(kx, (4, DIM)):
        y, ld = fwd(b, x)
        jac = jac_fwd(b, x)
        sign, ref = jnp.linalg.slogdet(jac)
        assert sign != 0
        assert abs(float(ld) - float(ref)) <= 1e-6 * max(1.0, abs(float(ref))), (name, ld, ref)
        if has_inverse:
            x_back, ld_inv = inv(b, y)
            np.testing.assert_allclose(x_back, x, rtol=1e-6, atol=1e-6)
            assert abs(float(ld_inv) + float(ld)) <= 1e-6 * max(1.0, abs(float(ld)))
            ref_inv = jnp.linalg.slogdet(jac_inv(b, y))[1]
            assert abs(float(ld_inv) - float(ref_inv)) <= 1e-6 * max(1.0, abs(float(ld)))
        else:
            with pytest.raises(F.NoInverseError, match="no closed-form inverse"):
                b.inverse(y, context)


@pytest.mark.parametrize("cond_dim", [None, CTX])
def test_made_is_autoregressive(x64, cond_dim):
    made = randomise(F.MADE(jax.random.key(0), DIM, 3, (16, 16), cond_dim, activation=jnp.tanh), jax.random.key(1))
    ctx = None if cond_dim is None else jnp.ones(cond_dim)
    jac = jax.jacfwd(lambda x: made(x, ctx))(jnp.linspace(-1, 1, DIM))  # (DIM, 3, DIM)
    dep = np.abs(np.asarray(jac)).sum(1) > 0
    np.testing.assert_array_equal(dep, np.tril(np.ones((DIM, DIM), bool), -1))  # i depends on j < i only
    maf = randomise(F.MaskedAutoregressive(jax.random.key(0), DIM, hidden=(16,)), jax.random.key(1))
    jz = jax.jacfwd(lambda x: maf.inverse(x)[0])(jnp.linspace(-1, 1, DIM))
    np.testing.assert_allclose(np.triu(jz, 1), 0.0)


def test_context_changes_the_map(x64):
    for make in (lambda k: F.Coupling(k, DIM, F.Affine(), (8,), CTX), lambda k: F.Planar(k, DIM, CTX),
                 lambda k: F.Sylvester(k, DIM, cond_dim=CTX)):
        b = randomise(make(jax.random.key(0)), jax.random.key(3))
        x = jnp.linspace(-1, 1, DIM)
        y1, _ = b.forward(x, jnp.zeros(CTX))
        y2, _ = b.forward(x, jnp.ones(CTX))
        assert float(jnp.max(jnp.abs(y1 - y2))) > 1e-3


def test_spline_float32_robust_over_wide_range():
    rqs = F.RationalQuadraticSpline(knots=8, bound=3.0)
    layer = randomise(F.Coupling(jax.random.key(0), 2, rqs, (16,)), jax.random.key(1), scale=2.0)
    maf = randomise(F.MaskedAutoregressive(jax.random.key(0), 2, rqs, (16,)), jax.random.key(1), scale=2.0)
    g = jnp.linspace(-10.0, 10.0, 201, dtype=jnp.float32)
    xs = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    assert xs.dtype == jnp.float32
    for b in (layer, maf):
        for method in ("forward", "inverse"):

            def loss(m, x):
                yy, ll = jax.vmap(lambda v: getattr(m, method)(v))(x)
                return jnp.sum(yy**2) + jnp.sum(ll), (yy, ll)

            @eqx.filter_jit  # one program: the map, its logdet and both gradients
            def check(m, x):
                (_, (yy, ll)), (gm, gx) = eqx.filter_value_and_grad(
                    lambda mx: loss(*mx), has_aux=True
                )((m, x))
                return yy, ll, gm, gx

            y, ld, gm, gx = check(b, xs)
            assert bool(jnp.all(jnp.isfinite(y))) and bool(jnp.all(jnp.isfinite(ld)))
            assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(eqx.filter(gm, eqx.is_inexact_array)))
            assert bool(jnp.all(jnp.isfinite(gx)))
        # the tails are exactly the identity
        far = jnp.array([[-9.0, 9.5]], jnp.float32)
        if b is layer:
            y, ld = jax.vmap(b.forward)(far)
            np.testing.assert_allclose(y, far, atol=1e-6)
            np.testing.assert_allclose(ld, 0.0, atol=1e-6)
    # float32 round trip across the bound, for moderate parameters and conditioner inputs
    # (extreme ones make the map flat to float32 precision in places: no inverse undoes that)
    xs = xs[jnp.max(jnp.abs(xs), axis=1) <= 4.0]
    for b in (layer, maf):
        b = randomise(type(b)(jax.random.key(0), 2, rqs, (16,)), jax.random.key(2), scale=0.3)
        y = eqx.filter_jit(lambda m, x: jax.vmap(m.forward)(x)[0])(b, xs)
        x_back, ld_inv = eqx.filter_jit(lambda m, v: jax.vmap(m.inverse)(v))(b, y)
        err = jnp.max(jnp.abs(x_back - xs), axis=1)
        # float32 error, amplified by the local condition number |dx/dy| of the inverse
        assert bool(jnp.all(err <= 1e-5 * (1 + jnp.exp(ld_inv)))), float(jnp.max(err / (1 + jnp.exp(ld_inv))))
        assert float(jnp.median(err)) < 1e-5


@pytest.mark.parametrize("make", [
    lambda k: F.realnvp(k, 2, layers=4, hidden=(16,)),
    lambda k: F.spline(k, 2, layers=3, hidden=(16,), bound=4.0),
    lambda k: F.maf(k, 2, layers=3, hidden=(16,)),
    lambda k: F.radial(k, 2, layers=4),
], ids=["realnvp", "spline", "maf", "radial"])
def test_density_integrates_to_one(x64, make):
    # moderate random parameters: sharp spikes would need a finer grid than quadrature affords
    flow = randomise(make(jax.random.key(0)), jax.random.key(1), scale=0.1)
    g = jnp.linspace(-12, 12, 601)
    xs = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    mass = float(jnp.sum(jnp.exp(eqx.filter_jit(flow.log_prob)(xs))) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 0.01, mass


@pytest.mark.parametrize("make", [
    lambda k: F.realnvp(k, DIM, layers=3, hidden=(8,), cond_dim=CTX),
    lambda k: F.spline(k, DIM, layers=2, hidden=(8,), cond_dim=CTX),
    lambda k: F.spline(k, DIM, layers=2, hidden=(8,), autoregressive=True, cond_dim=CTX),
    lambda k: F.maf(k, DIM, layers=2, hidden=(8,), cond_dim=CTX),
    lambda k: F.iaf(k, DIM, layers=2, hidden=(8,), cond_dim=CTX),
    lambda k: F.planar(k, DIM, layers=3, cond_dim=CTX),
    lambda k: F.radial(k, DIM, layers=3, cond_dim=CTX),
], ids=["realnvp", "spline", "spline_ar", "maf", "iaf", "planar", "radial"])
def test_sample_and_log_prob_agrees_with_log_prob(x64, make):
    flow = randomise(make(jax.random.key(0)), jax.random.key(1), scale=0.3)
    ctx = jax.random.normal(jax.random.key(5), (4, CTX))
    x, lp = flow.sample_and_log_prob(jax.random.key(2), 3, context=ctx)
    assert x.shape == (3, 4, DIM) and lp.shape == (3, 4)
    np.testing.assert_allclose(flow.log_prob(x, context=ctx), lp, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(flow.sample(jax.random.key(2), 3, context=ctx), x)


def test_mixture_density_sampling_and_checks(x64):
    # two affine flows N(-3, 0.5^2) and N(2, 1), weights 1:3, as a mixture
    a = F.Flow(F.AffineElementwise(jnp.array([-3.0]), 0.5, dim=1))
    b = F.Flow(F.AffineElementwise(jnp.array([2.0]), 1.0, dim=1))
    mix = F.Mixture([a, b], weights=[1.0, 3.0])
    g = jnp.linspace(-10, 10, 2001)[:, None]
    ref = np.log(0.25 * np.exp(-0.5 * ((g[:, 0] + 3) / 0.5) ** 2) / (0.5 * np.sqrt(2 * np.pi))
                 + 0.75 * np.exp(-0.5 * (g[:, 0] - 2) ** 2) / np.sqrt(2 * np.pi))
    np.testing.assert_allclose(mix.log_prob(g), ref, rtol=1e-9, atol=1e-9)
    assert abs(float(jnp.sum(jnp.exp(mix.log_prob(g))) * (g[1, 0] - g[0, 0])) - 1.0) < 1e-6
    x, lp = eqx.filter_jit(lambda m, k: m.sample_and_log_prob(k, 20000))(mix, jax.random.key(0))
    assert x.shape == (20000, 1) and lp.shape == (20000,)
    np.testing.assert_allclose(mix.log_prob(x), lp, rtol=1e-12)
    left = float(jnp.mean(x[:, 0] < -0.5))  # P(component a), which lies left of -0.5 but for 1e-6
    assert abs(left - 0.25) < 0.015, left
    assert abs(float(jnp.mean(x[:, 0])) - (0.25 * -3 + 0.75 * 2)) < 0.05
    np.testing.assert_allclose(mix.sample(jax.random.key(0), 20000), x)
    # conditional components: draws follow the context batch
    c = [F.realnvp(jax.random.key(i), DIM, layers=2, hidden=(8,), cond_dim=CTX) for i in range(3)]
    cmix = F.Mixture(c)
    ctx = jax.random.normal(jax.random.key(5), (4, CTX))
    xc, lpc = cmix.sample_and_log_prob(jax.random.key(1), 3, context=ctx)
    assert xc.shape == (3, 4, DIM) and lpc.shape == (3, 4) and cmix.dim == DIM and cmix.cond_dim == CTX
    np.testing.assert_allclose(lpc, jax.nn.logsumexp(jnp.stack([f.log_prob(xc, ctx) for f in c]), 0) - np.log(3),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="share dim and cond_dim"):
        F.Mixture([a, F.Flow(F.AffineElementwise(jnp.zeros(2), 1.0, dim=2))])
    with pytest.raises(ValueError, match="2 positive finite numbers"):
        F.Mixture([a, b], weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least one"):
        F.Mixture([])


def test_sylvester_constructors_sample_with_exact_density(x64):
    for kind in ("orthogonal", "householder", "triangular"):
        flow = randomise(F.sylvester(jax.random.key(0), DIM, layers=2, kind=kind), jax.random.key(1))
        x, lp = flow.sample_and_log_prob(jax.random.key(2), 4)
        # density of the sample via the autodiff Jacobian of the whole map
        z = flow.base.sample(jax.random.key(2), (4,))
        jac = eqx.filter_jit(lambda f, v: jax.vmap(jax.jacfwd(lambda u: f.bijection.forward(u)[0]))(v))(flow, z)
        ref = flow.base.log_prob(z) - jnp.linalg.slogdet(jac)[1]
        np.testing.assert_allclose(lp, ref, rtol=1e-9)
        with pytest.raises(F.NoInverseError):
            flow.log_prob(x)


def test_constructors_start_at_identity():
    x = jax.random.normal(jax.random.key(0), (7, DIM))
    for make in (F.realnvp, F.spline, F.maf, F.iaf, F.planar, F.radial):
        flow = make(jax.random.key(1), DIM)  # identity up to the (volume-preserving) permutations
        y, lp = eqx.filter_jit(lambda f: f.sample_and_log_prob(jax.random.key(3), 7))(flow)
        z = flow.base.sample(jax.random.key(3), (7,))
        np.testing.assert_allclose(jnp.sort(y, -1), jnp.sort(z, -1), atol=1e-5)
        np.testing.assert_allclose(lp, flow.base.log_prob(z), atol=1e-5)
        np.testing.assert_allclose(eqx.filter_jit(flow.log_prob)(x), F.StandardNormal(DIM).log_prob(x), atol=1e-5)


def test_actnorm_data_dependent_init():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (500, DIM))
    a = F.ActNorm(DIM).initialise(x)
    y = jax.vmap(lambda v: a.forward(v)[0])(x)
    np.testing.assert_allclose(jnp.mean(y, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y, 0), 1.0, atol=1e-4)
    # a constant column is centred, not blown up by 1/sd
    c = F.ActNorm(DIM).initialise(x.at[:, 0].set(7.0))
    assert float(c.log_scale[0]) == 0.0 and abs(float(c.forward(x[0].at[0].set(7.0))[0][0])) < 1e-6


def test_student_t_base_normalised(x64):
    flow = F.Flow(F.TriangularAffine(2, loc=jnp.ones(2)), base=F.StudentT(2, df=3.0))
    g = jnp.linspace(-60, 60, 1201)
    xs = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    mass = float(jnp.sum(jnp.exp(flow.log_prob(xs))) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 0.01
    x, lp = flow.sample_and_log_prob(jax.random.key(0), 5)
    np.testing.assert_allclose(flow.log_prob(x), lp, rtol=1e-9)


@pytest.mark.parametrize("bij,inside,outside", [(F.Exp(), 2.0, -1.0), (F.Softplus(), 2.0, 0.0),
                                                 (F.Sigmoid(), 0.3, 1.5), (F.Tanh(), 0.3, -1.0)])
def test_log_prob_outside_the_support_is_minus_inf(bij, inside, outside):
    """Was NaN (log of a negative number); the gradient stays finite."""
    flow = F.Flow(F.Chain([F.AffineElementwise(0.0, 1.0, dim=2), bij]))
    assert np.isfinite(float(flow.log_prob(jnp.array([inside, inside]))))
    x = jnp.array([inside, outside])
    assert float(flow.log_prob(x)) == -np.inf
    assert np.all(np.isfinite(jax.grad(flow.log_prob)(x)))


@pytest.mark.parametrize("df", [3.0, 5.0, 10.0, 2.5])
def test_student_t_base_samples_follow_the_t_law(df):
    """Integer df (chi^2 from exponentials, plus a squared normal when odd) and
    non-integer df (gamma) all draw t(df)."""
    from scipy import stats

    x = np.asarray(F.StudentT(1, df=df).sample(jax.random.key(1), (100_000,)))[:, 0]
    qs = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    np.testing.assert_allclose(np.quantile(x, qs), stats.t(df).ppf(qs), atol=0.05 * df)
    assert stats.kstest(x, stats.t(df).cdf).pvalue > 1e-3


# ---------------------------------------------------------------- bad input
def test_bad_input_messages():
    layer = F.Coupling(jax.random.key(0), DIM, F.Affine(), (8,))
    with pytest.raises(ValueError, match=r"length 5, got shape \(4,\)"):
        layer.forward(jnp.zeros(4))
    with pytest.raises(ValueError, match=r"single vector.*shape \(3, 5\).*vmap"):
        layer.forward(jnp.zeros((3, DIM)))
    cond = F.Coupling(jax.random.key(0), DIM, F.Affine(), (8,), cond_dim=CTX)
    with pytest.raises(ValueError, match=r"conditional.*context.*\(3,\).*None"):
        cond.inverse(jnp.zeros(DIM))
    with pytest.raises(ValueError, match=r"context` of shape \(3,\), got \(2,\)"):
        cond.forward(jnp.zeros(DIM), jnp.zeros(2))

    flow = F.realnvp(jax.random.key(0), DIM, layers=2)
    with pytest.raises(ValueError, match=r"x of shape \(\.\.\., 5\), got \(10, 4\)"):
        flow.log_prob(jnp.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"2 non-finite value\(s\)"):
        flow.log_prob(jnp.array([[0.0, jnp.nan, 0, 0, 0], [jnp.inf, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="unconditional"):
        flow.log_prob(jnp.zeros(DIM), context=jnp.zeros(2))
    cflow = F.maf(jax.random.key(0), DIM, layers=2, cond_dim=CTX)
    with pytest.raises(ValueError, match=r"conditional and needs `context` of shape \(\.\.\., 3\)"):
        cflow.sample(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="positive integer"):
        F.realnvp(jax.random.key(0), 0)
    with pytest.raises(TypeError, match="sample size"):
        flow.sample(jax.random.key(0), 2.5)
    with pytest.raises(ValueError, match=r"`context` holds 1 non-finite"):
        cflow.log_prob(jnp.zeros(DIM), context=jnp.array([0.0, jnp.nan, 0.0]))
    # constructor arguments that would give NaNs or a wrong density
    with pytest.raises(ValueError, match="base has dim 4 but the bijection acts on dim 5"):
        F.Flow(flow.bijection, base=F.StudentT(4))
    with pytest.raises(ValueError, match="positive finite.*StandardNormal"):
        F.StudentT(DIM, float("inf"))
    with pytest.raises(ValueError, match="diagonal of `chol`.*positive"):
        F.TriangularAffine(2, chol=jnp.array([[-1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="`scale`.*positive"):
        F.TriangularAffine(2, scale=0.0)
    # non-finite input under jit is caught at run time with the same meaning
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(eqx.filter_jit(flow.log_prob)(jnp.full((2, DIM), jnp.nan)))


def test_planar_inverse_is_numerical_but_exact(x64):
    b = randomise(F.Planar(jax.random.key(0), DIM), jax.random.key(1), scale=2.0)
    x = 3 * jax.random.normal(jax.random.key(2), (DIM,))
    y, _ = b.forward(x)
    np.testing.assert_allclose(b.inverse(y)[0], x, atol=1e-10)
    # gradients flow through the inverse (implicit function through the Newton step)
    g = jax.grad(lambda m: jnp.sum(m.inverse(y)[0]))(b)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(eqx.filter(g, eqx.is_inexact_array)))


def test_same_key_same_flow():
    a = F.spline(jax.random.key(3), DIM)
    b = F.spline(jax.random.PRNGKey(3), DIM)
    np.testing.assert_allclose(a.sample(jax.random.key(0), 4), b.sample(jax.random.PRNGKey(0), 4))


def _ring(rng, n, radius=2.0, width=0.3):
    r = np.empty(0)
    while r.size < n:  # radius ~ N(radius, width) truncated to r > 0
        c = rng.normal(radius, width, 2 * n)
        r = np.concatenate([r, c[c > 0]])
    a = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r[:n] * np.cos(a), r[:n] * np.sin(a)], 1)


def _ring_log_prob(x, radius=2.0, width=0.3):
    from scipy.stats import norm

    r = np.linalg.norm(x, axis=1)  # polar change of variables: p(x) = p(r) / (2 pi r)
    return norm.logpdf(r, radius, width) - norm.logcdf(radius / width) - np.log(2 * np.pi * r)


def test_maximum_likelihood_fit_to_a_ring_reaches_the_true_density():
    rng = np.random.default_rng(0)
    train, test = _ring(rng, 20000), _ring(rng, 20000)
    flow = F.spline(jax.random.key(0), 2, layers=4, hidden=(32, 32), knots=8, bound=4.0)
    flow, losses = F.fit_to_data(flow, jax.random.key(1), train, steps=2500, batch_size=256, learning_rate=3e-3)
    held_out = float(jnp.mean(eqx.filter_jit(flow.log_prob)(test)))
    true = float(np.mean(_ring_log_prob(test)))
    assert true - held_out < 0.05, (held_out, true)
    assert losses[-100:].mean() < losses[:100].mean()
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        F.fit_to_data(flow, jax.random.key(1), train[:, :1])


def test_frozen_bijection_gets_no_gradient_and_stays_put():
    """Frozen(b) maps like b, but an optimiser step leaves its parameters where they were
    (the whitening layer of fp.fit's families), while the layers before it train."""
    import optax

    key = jax.random.key(3)
    fixed = randomise(F.TriangularAffine(DIM), key)
    q = F.Flow(F.Chain([F.TriangularAffine(DIM), F.Frozen(fixed)]))
    x = jax.random.normal(key, (5, DIM))
    np.testing.assert_allclose(F.Frozen(fixed).forward(x[0])[0], fixed.forward(x[0])[0])
    params, static = eqx.partition(q, eqx.is_inexact_array)
    grads = jax.grad(lambda p: -jnp.mean(eqx.combine(p, static).log_prob(x)))(params)
    g_train, g_frozen = grads.bijection.layers
    assert float(optax.tree.norm(g_train)) > 1e-3
    assert float(optax.tree.norm(g_frozen)) == 0.0
    opt = optax.adam(0.1)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new.bijection.layers[1].bijection.off_diag, fixed.off_diag)
    assert not np.allclose(new.bijection.layers[0].loc, 0.0)


def test_shared_softplus_matches_jax_with_its_derivatives():
    # flowpost._math.softplus (flows and targets) has a hand-written derivative: values,
    # first and second derivatives must be jax.nn.softplus's, from -100 to 100
    from flowpost._math import softplus

    x = jnp.linspace(-100.0, 100.0, 2001)
    np.testing.assert_array_equal(softplus(x), jax.nn.softplus(x))
    np.testing.assert_allclose(jax.vmap(jax.grad(softplus))(x), jax.nn.sigmoid(x), atol=1e-7)
    d2 = jax.vmap(jax.grad(jax.grad(softplus)))(x)
    np.testing.assert_allclose(d2, jax.nn.sigmoid(x) * jax.nn.sigmoid(-x), atol=1e-6)


def test_inputs_are_cast_and_bad_arguments_named():
    key = jax.random.key(0)
    f = fp.flows.realnvp(key, 2, layers=2)
    # integer input: cast to the flow's float dtype, same density as the float input
    np.testing.assert_allclose(f.log_prob(jnp.array([1, 2])), f.log_prob(jnp.array([1.0, 2.0])), rtol=1e-6)
    assert f.bijection.forward(jnp.array([1, 2]))[0].dtype == jnp.float32
    with pytest.raises(ValueError, match="sample size must be non-negative"):
        f.sample(key, (-1, 2))
    fc = fp.flows.realnvp(key, 2, layers=2, cond_dim=3)
    with pytest.raises(ValueError, match=r"\(4,\) and of `context` \(5,\) do not broadcast"):
        fc.log_prob(jnp.zeros((4, 2)), context=jnp.ones((5, 3)))
    for make, match in ((lambda: fp.flows.spline(key, 2, knots=0), "`knots`"),
                        (lambda: fp.flows.spline(key, 2, bound=-1.0), "`bound`"),
                        (lambda: fp.flows.realnvp(key, 2, cond_dim=-1), "`cond_dim`"),
                        (lambda: fp.flows.planar(key, 2, cond_dim=0), "`cond_dim`")):
        with pytest.raises(ValueError, match=match):
            make()
    x = np.random.default_rng(0).normal(size=(64, 2))
    for kw, match in (({"batch_size": 0}, "`batch_size`"), ({"chunk": 0}, "`chunk`"), ({"steps": 0}, "`steps`"),
                      ({"learning_rate": float("nan")}, "`learning_rate`"), ({"learning_rate": -1.0}, "`learning_rate`")):
        with pytest.raises(ValueError, match=match):
            fp.flows.fit_to_data(f, key, x, **{"steps": 5, **kw})
    with pytest.raises(ValueError, match="`data` is empty"):
        fp.flows.fit_to_data(f, key, x[:0], steps=5)
