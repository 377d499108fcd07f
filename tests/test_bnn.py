"""Bayesian neural networks: exactness on Bayesian linear regression, predictive
uncertainty, the minibatch ELBO, the families' densities, input checks, UCI data, CLI."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowpost as fp
from flowpost.experiments.bnn import families, predict, uci


def _linear_data(n=40, d=3, noise=0.5, seed=0):
    rs = np.random.RandomState(seed)
    x = rs.normal(size=(n, d)).astype(np.float32)
    w = np.array([1.0, -2.0, 0.5], np.float32)[:d]
    y = (x @ w + 0.3 + noise * rs.normal(size=n)).astype(np.float32)
    return x, y


def _exact_blr(x, y, noise, prior):
    """Posterior of [W (d,), b] for y = W x + b + N(0, noise^2), N(0, prior^2) priors."""
    phi = np.concatenate([x, np.ones((len(x), 1))], 1).astype(np.float64)
    prec = phi.T @ phi / noise**2 + np.eye(phi.shape[1]) / prior**2
    cov = np.linalg.inv(prec)
    return cov @ phi.T @ y / noise**2, cov


def test_blr_flow_posterior_matches_exact_gaussian():
    x, y = _linear_data()
    net = eqx.nn.Linear(3, 1, key=jax.random.key(0))  # weight (1, 3) then bias (1,): ravel order
    model = fp.bnn.model(net, "gaussian", prior=1.0, noise=0.5)
    mean, cov = _exact_blr(x, y, 0.5, 1.0)
    result = fp.fit(model.target(x, y), family="flow", steps=800, key=jax.random.key(1), progress=False)
    draws = np.asarray(result.q.sample(jax.random.key(2), 40000), np.float64)
    sd = np.sqrt(np.diag(cov))
    assert np.max(np.abs(draws.mean(0) - mean) / sd) < 0.03
    assert np.max(np.abs(np.cov(draws.T) - cov)) / np.max(np.abs(cov)) < 0.03
    assert np.max(np.abs(draws.std(0) / sd - 1)) < 0.03


def test_apply_function_and_equinox_module_agree():
    x, y = _linear_data(n=10)
    net = eqx.nn.Linear(3, 1, key=jax.random.key(0))
    params = {"w": net.weight, "b": net.bias}
    m1 = fp.bnn.model(net, noise=0.5)
    m2 = fp.bnn.model(lambda p, x: x @ p["w"].T + p["b"], params=params, noise=0.5)
    theta = jax.random.normal(jax.random.key(3), (m1.dim,))
    # ravel order: Equinox (weight, bias); dict keys sorted (b, w)
    theta2 = jnp.concatenate([theta[3:], theta[:3]])
    assert np.allclose(m1.log_joint(theta, x, y), m2.log_joint(theta2, x, y), rtol=1e-5)


def test_predictive_sd_grows_away_from_the_data():
    rs = np.random.RandomState(0)
    x = rs.uniform(-1, 1, size=(64, 1)).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) + 0.1 * rs.normal(size=64)).astype(np.float32)
    net = fp.bnn.mlp(jax.random.key(0), 1, 1, hidden=(32,))
    model = fp.bnn.model(net, "gaussian", prior=1.0, noise=0.1)
    res = fp.bnn.fit(model, x, y, "meanfield", epochs=600, batch_size=64, learning_rate=1e-2,
                     key=jax.random.key(1), progress=False)
    thetas = res.sample(jax.random.key(2), 400)
    grid = np.array([[-6.0], [-0.5], [0.0], [0.5], [6.0]], np.float32)
    pred = predict.regression(model, thetas, grid)
    f_sd = np.asarray(model.outputs(thetas, grid)[..., 0].std(0))  # epistemic part
    inside, far = f_sd[1:4].max(), min(f_sd[0], f_sd[4])
    assert far > 3 * inside, f_sd
    assert np.all(pred["sd"] >= f_sd - 1e-5)  # noise adds to the epistemic variance
    fit_pred = predict.regression(model, thetas, x, y)
    assert fit_pred["rmse"] < 0.3


def test_heteroscedastic_likelihood_learns_where_the_noise_is():
    from scipy import stats

    lik = fp.bnn.HeteroscedasticGaussian()
    out = jnp.array([[0.5, -1.0], [2.0, 3.0]])
    y = jnp.array([0.0, 1.0])
    sd = np.log1p(np.exp(np.array([-1.0, 3.0]))) + 1e-3
    np.testing.assert_allclose(lik.log_prob(out, y, None), stats.norm.logpdf([0.0, 1.0], [0.5, 2.0], sd), rtol=1e-5)
    # noise sd 0.05 for x < 0 and 0.5 for x > 0; the mean is x
    rs = np.random.RandomState(0)
    x = rs.uniform(-1, 1, size=(200, 1)).astype(np.float32)
    y = (x[:, 0] + np.where(x[:, 0] < 0, 0.05, 0.5) * rs.normal(size=200)).astype(np.float32)
    net = fp.bnn.mlp(jax.random.key(0), 1, 2, hidden=(16,))
    model = fp.bnn.model(net, "heteroscedastic")
    assert model.dim == model.n_weights  # no noise coordinate: the network predicts it
    res = fp.bnn.fit(model, x, y, "meanfield", epochs=1500, batch_size=200, learning_rate=1e-2,
                     key=jax.random.key(1), progress=False)
    thetas = res.sample(jax.random.key(2), 200)
    grid = np.array([[-0.6], [0.6]], np.float32)
    pred = predict.regression(model, thetas, grid)
    assert 0.03 < pred["sd"][0] < 0.1 and 0.35 < pred["sd"][1] < 0.7, pred["sd"]
    # the predictive is the mixture over draws: mean and total variance by hand
    o = np.asarray(model.outputs(thetas, grid), np.float64)
    var = (np.log1p(np.exp(o[..., 1])) + 1e-3) ** 2
    np.testing.assert_allclose(pred["mean"], o[..., 0].mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pred["var"], var.mean(0) + o[..., 0].var(0), rtol=1e-3)
    with pytest.raises(ValueError, match="two outputs per example"):
        fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 1, 1, hidden=(4,)), "heteroscedastic").check_data(x, y)


def test_minibatch_elbo_is_unbiased():
    x, y = _linear_data(n=48)
    net = fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(8,))
    model = fp.bnn.model(net)  # learned noise
    q = families.make("lowrank", model, key=jax.random.key(1))
    key = jax.random.key(2)
    elbo = jax.jit(lambda xb, yb: fp.vi.objectives.elbo(q, fp.bnn.minibatch_log_joint(model, xb, yb, 48), key, 8)[1])
    elbo_full = elbo(x, y)
    perm = np.random.RandomState(0).permutation(48).reshape(6, 8)
    batch_elbos = [elbo(x[i], y[i]) for i in perm]
    assert np.isclose(np.mean(batch_elbos), elbo_full, rtol=1e-5)
    assert np.std(batch_elbos) > 1e-3 * abs(float(elbo_full))  # the batches do differ


@pytest.mark.parametrize("family", families.FAMILIES)
def test_family_densities_and_logdet(family):
    x, y = _linear_data(n=8)
    net = fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(4,))  # 21 weights + log noise
    model = fp.bnn.model(net)
    q = families.make(family, model, key=jax.random.key(1), init_scale=0.3, block=4, rank=2, layers=2)
    # move every parameter off its initial value so that the flows are not the identity
    params, static = eqx.partition(q, eqx.is_inexact_array)
    leaves, tree = jax.tree.flatten(params)
    ks = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, ks)])
    q = eqx.combine(params, static)

    @jax.jit
    def check(q):
        draws, lq = q.sample_and_log_prob(jax.random.key(2), 5)
        z = jax.random.normal(jax.random.key(3), (model.dim,))
        jac = jax.jacfwd(lambda v: q.bijection.forward(v)[0])(z)
        return q.log_prob(draws), lq, q.bijection.forward(z)[1], jac

    lp, lq, logdet, jac = check(q)
    assert np.allclose(lp, lq, atol=2e-3)
    assert np.isclose(logdet, np.linalg.slogdet(np.asarray(jac, np.float64))[1], atol=2e-3)


def test_fit_many_trains_each_data_set():
    x, y = _linear_data(n=32)
    model = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(8,)))
    res = fp.bnn.fit_many(model, np.stack([x, x]), np.stack([y, -y]), "meanfield", epochs=300, batch_size=32,
                          learning_rate=1e-2, key=jax.random.key(0), progress=False)
    assert len(res) == 2 and res[0].trace.elbo.shape == (300,)
    m0 = np.asarray(model.outputs(res[0].sample(jax.random.key(1), 50), x)).mean(0)[:, 0]
    m1 = np.asarray(model.outputs(res[1].sample(jax.random.key(1), 50), x)).mean(0)[:, 0]
    assert np.corrcoef(m0, y)[0, 1] > 0.85 and np.corrcoef(m1, -y)[0, 1] > 0.85


def test_ensemble_members_are_distinct_fits_and_predict_as_their_mixture(tmp_path):
    x, y = _linear_data(n=32)
    model = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(8,)))
    kw = dict(epochs=30, batch_size=32, learning_rate=1e-2, key=jax.random.key(0), progress=False)
    single = fp.bnn.fit(model, x, y, "meanfield", **kw)
    ens = fp.bnn.fit(model, x, y, "meanfield", members=3, **kw)
    assert isinstance(ens.q, fp.flows.Mixture) and ens.members == 3 and single.members == 1
    # member 1 is exactly the single fit; the others start from permuted initial weights
    first = ens.q.components[0]
    np.testing.assert_array_equal(first.sample(jax.random.key(1), 4), single.sample(jax.random.key(1), 4))
    starts = [model.init_weights] + [model.reinitialised(jax.random.split(jax.random.fold_in(jax.random.key(0), m))[0])
                                     .init_weights for m in (1, 2)]
    for layer in range(model.n_layers):  # a permutation within every parameter array
        seg = model.segments == layer
        np.testing.assert_array_equal(np.sort(starts[1][seg]), np.sort(starts[0][seg]))
    assert not np.allclose(starts[1], starts[0]) and not np.allclose(starts[2], starts[1])
    locs = [np.asarray(c.bijection.loc) for c in ens.q.components]
    assert min(np.abs(locs[i] - locs[j]).max() for i in range(3) for j in range(i)) > 0.1
    # the ensemble's trace is the members' mean; its density is the mixture's
    assert ens.trace.elbo.shape == (30,) and ens.epochs == 30 and ens.message == "completed"
    th = ens.sample(jax.random.key(2), 6)
    lq = jax.nn.logsumexp(jnp.stack([c.log_prob(th) for c in ens.q.components]), 0) - np.log(3)
    np.testing.assert_allclose(ens.q.log_prob(th), lq, rtol=1e-5)
    d = ens.fit_result(x, y).diagnostics(jax.random.key(3), 200)
    assert np.isfinite(d["elbo"]) and np.isfinite(d["khat"])
    ens.save(tmp_path / "ens")
    back = fp.bnn.load(tmp_path / "ens", model)
    assert back.members == 3
    np.testing.assert_array_equal(back.sample(jax.random.key(4), 5), ens.sample(jax.random.key(4), 5))
    with pytest.raises(ValueError, match="`members` must be a positive integer"):
        fp.bnn.fit(model, x, y, "meanfield", members=0, **kw)


def test_save_and_load_a_weight_posterior(tmp_path):
    x, y = _linear_data(n=32)
    model = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(8,)))
    r = fp.bnn.fit(model, x, y, "lowrank", epochs=20, family_options={"rank": 3}, key=jax.random.key(0),
                   progress=False)
    r.save(tmp_path / "bnn")
    back = fp.bnn.load(tmp_path / "bnn", model)
    np.testing.assert_array_equal(back.sample(jax.random.key(1), 5), r.sample(jax.random.key(1), 5))
    np.testing.assert_array_equal(back.trace.elbo, r.trace.elbo)
    assert back.family == "lowrank" and back.family_options == {"rank": 3} and back.epochs == 20
    other = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(9,)))
    with pytest.raises(ValueError, match="saved posterior has 42 parameters, the model has 47"):
        fp.bnn.load(tmp_path / "bnn", other)


def test_bad_input_is_rejected_before_training():
    x, y = _linear_data(n=10)
    key = jax.random.key(0)
    reg = fp.bnn.model(fp.bnn.mlp(key, 3, 1, hidden=(4,)))
    fit = lambda m, x, y, **k: fp.bnn.fit(m, x, y, epochs=1, key=key, progress=False, **k)  # noqa: E731
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="`x` holds 1 non-finite"):
        fit(reg, bad, y)
    with pytest.raises(ValueError, match="`y` holds 1 non-finite"):
        fit(reg, x, np.where(np.arange(10) == 3, np.inf, y))
    with pytest.raises(ValueError, match="same length, got 10 and 9"):
        fit(reg, x, y[:9])
    wide = fp.bnn.model(fp.bnn.mlp(key, 3, 3, hidden=(4,)))
    with pytest.raises(ValueError, match="Gaussian likelihood needs one output"):
        fit(wide, x, y)
    with pytest.raises(ValueError, match="network failed on inputs"):
        fit(reg, np.ones((10, 5), np.float32), y)
    pooled = fp.bnn.model(lambda p, x: jnp.sum(x @ p, keepdims=True), params=jnp.zeros((3, 1)))  # mixes examples
    with pytest.raises(ValueError, match=r"maps a batch of shape \(3, 3\) to outputs of shape \(1, 1\)"):
        fit(pooled, x, y)
    binary = fp.bnn.model(fp.bnn.mlp(key, 3, 1, hidden=(4,)), "bernoulli")
    with pytest.raises(ValueError, match="Bernoulli labels `y` must be 0 or 1; found \\[2\\]"):
        fit(binary, x, np.array([0, 1] * 4 + [2, 1]))
    cat = fp.bnn.model(fp.bnn.mlp(key, 3, 3, hidden=(4,)), "categorical")
    with pytest.raises(ValueError, match="integers in \\[0, 3\\)"):
        fit(cat, x, np.arange(10) % 4)
    with pytest.raises(ValueError, match="`family` must be one of"):
        fit(reg, x, y, family="nope")
    with pytest.raises(ValueError, match="`epochs` must be a positive integer"):
        fp.bnn.fit(reg, x, y, epochs=0, key=key)
    with pytest.raises(ValueError, match="`learning_rate` must be a positive finite number"):
        fp.bnn.fit(reg, x, y, learning_rate=-1e-3, key=key)
    with pytest.raises(ValueError, match="`likelihood` must be one of"):
        fp.bnn.model(fp.bnn.mlp(key, 3, 1), "poisson")


def test_classification_metrics():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    # bins: conf 0.9 -> acc 1; 0.8 -> acc 0; 0.7 -> acc 1; 0.6 -> acc 1
    assert np.isclose(predict.ece(probs, y), (0.1 + 0.8 + 0.3 + 0.4) / 4)
    model = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 3, 1, hidden=(4,)), "bernoulli")
    thetas = jax.random.normal(jax.random.key(1), (7, model.dim))
    x = np.random.RandomState(0).normal(size=(5, 3)).astype(np.float32)
    out = predict.classification(model, thetas, x, np.array([0, 1, 0, 1, 1]))
    logits = np.asarray(model.outputs(thetas, x))[..., 0]
    p1 = (1 / (1 + np.exp(-logits))).mean(0)
    assert np.allclose(out["probs"][:, 1], p1, atol=1e-6)
    assert np.isclose(out["test_ll"], np.mean(np.log(np.where([0, 1, 0, 1, 1], p1, 1 - p1))), atol=1e-5)


def test_prediction_inputs_and_stability():
    """Found by a sweep with unseen networks: each line failed before its fix."""
    key = jax.random.key(0)
    # the predictive variance is the spread about the mean, not E f^2 - (E f)^2 (which
    # cancelled to -0.06 in float32 for outputs near 1000 with spread 1e-3)
    lin = fp.bnn.model(lambda p, x: x @ p[0] + p[1], "gaussian", params=(jnp.zeros((1, 1)), jnp.zeros(1)), noise=0.01)
    th = np.zeros((200, lin.dim), np.float32)
    th[:, 1] = 1000 + 1e-3 * np.random.RandomState(0).normal(size=200)
    out = predict.regression(lin, th, np.zeros((5, 1), np.float32))
    assert np.allclose(out["var"], 1e-4 + np.var(th[:, 1].astype(np.float64)), rtol=0.05)
    # y_std as y.std(0) of an (n, 1) array; one theta vector; clear errors otherwise
    y = np.ones(5, np.float32)
    a = predict.regression(lin, th[0], np.zeros((5, 1)), y, y_std=np.array([2.0]))
    assert a["mean"].shape == (5,) and np.isfinite(a["test_ll"])
    with pytest.raises(ValueError, match="`y_std` must be one finite positive number"):
        predict.regression(lin, th, np.zeros((5, 1)), y, y_std=0.0)
    with pytest.raises(ValueError, match=r"`thetas` must be weight samples of shape \(S, 2\)"):
        predict.regression(lin, th[:, :1], np.zeros((5, 1)))
    with pytest.raises(ValueError, match="same length, got 5 and 3"):
        predict.regression(lin, th, np.zeros((5, 1)), y[:3])
    # categorical labels shaped (n, 1), as fit accepts them
    cat = fp.bnn.model(fp.bnn.mlp(key, 3, 3, hidden=(4,)), "categorical")
    thetas = jax.random.normal(key, (6, cat.dim))
    x = np.random.RandomState(1).normal(size=(8, 3)).astype(np.float32)
    labels = np.arange(8) % 3
    flat, column = predict.classification(cat, thetas, x, labels), predict.classification(cat, thetas, x, labels[:, None])
    assert flat["test_ll"] == column["test_ll"] and flat["accuracy"] == column["accuracy"]
    np.testing.assert_allclose(predict.log_predictive(cat, thetas, x, labels[:, None]),
                               predict.log_predictive(cat, thetas, x, labels))
    with pytest.raises(ValueError, match="must be integers; found 1 that are not, e.g. 1.5"):
        predict.classification(cat, thetas, x, np.where(np.arange(8) == 2, 1.5, labels))
    # a Bernoulli model with several outputs per example: one probability row per output
    pix = fp.bnn.model(fp.bnn.mlp(key, 3, 6, hidden=(4,)), "bernoulli")
    yb = (np.random.RandomState(2).uniform(size=(8, 6)) > 0.5).astype(np.float32)
    res = predict.classification(pix, jax.random.normal(key, (4, pix.dim)), x, yb)
    assert res["probs"].shape == (48, 2) and 0 <= res["ece"] <= 1


def test_model_options_and_saved_index(tmp_path):
    key = jax.random.key(0)
    net = fp.bnn.mlp(key, 3, 1, hidden=(4,))
    # NumPy scalars (e.g. noise=y.std() on float32 data) are numbers
    assert fp.bnn.model(net, noise=np.float32(0.1), prior=np.float32(2.0)).prior.scale == 2.0
    with pytest.raises(ValueError, match="a 'bernoulli' likelihood has none"):
        fp.bnn.model(net, "bernoulli", noise=0.1)
    x, y = _linear_data(n=16)
    model = fp.bnn.model(net)
    with pytest.raises(ValueError, match=r"unknown `family_options` \['rnk'\]; the options are"):
        fp.bnn.fit(model, x, y, "lowrank", family_options={"rnk": 2}, key=key, progress=False)
    for index, what in (([model.dim - 1, -1], r"lie in \[0, 22\)"), ([3, 3, 4], "repeats 1"), ([0.5, 1], "integer")):
        with pytest.raises(ValueError, match=what):
            fp.bnn.fit(model, x, y, "subspace", family_options={"index": index}, key=key, progress=False)
    with pytest.raises(ValueError, match="`block` 64 is larger than every parameter array"):
        fp.bnn.fit(model, x, y, "blockflow", family_options={"block": 64}, key=key, progress=False)
    # a subspace given as a NumPy index is saved and loaded
    r = fp.bnn.fit(model, x, y, "subspace", family_options={"index": np.arange(10)}, epochs=5, key=key,
                   progress=False)
    r.save(tmp_path / "sub")
    back = fp.bnn.load(tmp_path / "sub", model)
    np.testing.assert_array_equal(back.sample(jax.random.key(1), 3), r.sample(jax.random.key(1), 3))
    # Flax-style layer names sort as text (Dense_10 before Dense_9); the output layer is Dense_11
    params = {"params": {f"Dense_{i}": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)} for i in range(12)}}

    def apply(p, x):
        for i in range(12):
            x = jnp.tanh(x) @ p["params"][f"Dense_{i}"]["kernel"] + p["params"][f"Dense_{i}"]["bias"]
        return x[:, :1]

    flax = fp.bnn.model(apply, params=params)
    names = {flax.segment_names[s] for s in flax.segments[families.last_layer_index(flax)[:-1]]}
    assert names == {"['params']['Dense_11']['bias']", "['params']['Dense_11']['kernel']"}


def test_mixed_dtype_params_under_x64(x64):
    """float64 and float32 leaves ravel to float64; the weights are float32 (failed with
    'unravel function given array of dtype float32, but expected dtype float64')."""
    params = (jnp.zeros((1, 1), jnp.float64), jnp.zeros(1, jnp.float32))
    m = fp.bnn.model(lambda p, x: x @ p[0] + p[1], "gaussian", params=params, noise=0.5)
    x = np.linspace(-1, 1, 20)[:, None]
    y = 2 * x[:, 0] + 0.1
    r = fp.bnn.fit(m, x, y, "meanfield", epochs=3000, learning_rate=1e-2, key=jax.random.key(0), progress=False)
    mean, cov = _exact_blr(x, y, 0.5, 1.0)
    np.testing.assert_allclose(np.asarray(r.sample(jax.random.key(1), 4000)).mean(0), mean, atol=0.05)


def test_uci_split_rule_and_standardisation():
    x, y = uci.load_raw("bostonHousing")
    assert x.shape == (506, 13)
    idx = uci.split_indices(506, 20)
    assert len(idx) == 20 and all(len(tr) == 455 and len(te) == 51 for tr, te in idx)
    assert all(np.array_equal(np.sort(np.concatenate(s)), np.arange(506)) for s in idx)
    assert uci.n_splits("protein-tertiary-structure") == 5 and uci.n_splits("yacht") == 20
    s = uci.load("bostonHousing", 3)
    tr, te = idx[3]
    assert np.allclose(s.x_train.mean(0), 0, atol=1e-5) and np.allclose(s.x_train.std(0), 1, atol=1e-4)
    assert np.isclose(s.y_train.mean(), 0, atol=1e-5) and np.isclose(s.y_train.std(), 1, atol=1e-4)
    assert np.allclose(s.y_test, y[te]) and np.isclose(s.y_mean, y[tr].mean())
    stacked = uci.load_splits("yacht", 3)
    assert stacked.x_train.shape == (3, 277, 6) and stacked.y_test.shape == (3, 31)
    xc, yc = uci.load_classification_raw("sonar")
    assert xc.shape == (208, 60) and set(np.unique(yc)) == {0, 1} and yc.sum() == 111  # 111 mines
    with pytest.raises(ValueError, match="unknown data set"):
        uci.load("boston")


def test_cli_smoke(tmp_path):
    from typer.testing import CliRunner

    from flowpost.cli import app

    r = CliRunner().invoke(app, ["bnn", "uci", "--dataset", "yacht", "--splits", "0,4", "--epochs", "2",
                                 "--family", "meanfield", "--out", str(tmp_path / "u")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "u" / "results.json").read_text())
    assert res["dataset"] == "yacht" and [s["split"] for s in res["splits"]] == [0, 4]
    assert {"rmse_mean", "rmse_se", "test_ll_mean", "test_ll_se"} <= set(res)
    assert np.isclose(res["rmse_mean"], np.mean([s["rmse"] for s in res["splits"]]))
    assert (tmp_path / "u" / "predictive.png").stat().st_size > 1000
    net = fp.bnn.mlp(jax.random.key(5), 6, 1, hidden=(50,))  # any key: only the structure is used
    post = fp.bnn.load(tmp_path / "u" / "posteriors" / "split_4", fp.bnn.model(net, "gaussian"))
    assert post.family == "meanfield" and post.epochs == 2 and post.sample(jax.random.key(0), 3).shape == (3, 402)
    r = CliRunner().invoke(app, ["bnn", "uci", "--dataset", "yacht", "--splits", "1", "--epochs", "2", "--family",
                                 "meanfield", "--members", "2", "--likelihood", "heteroscedastic", "--out",
                                 str(tmp_path / "e")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["members"] == 2 and res["likelihood"] == "heteroscedastic" and np.isfinite(res["test_ll_mean"])
    net2 = fp.bnn.mlp(jax.random.key(5), 6, 2, hidden=(50,))
    post = fp.bnn.load(tmp_path / "e" / "posteriors" / "split_0", fp.bnn.model(net2, "heteroscedastic"))
    assert post.members == 2 and post.sample(jax.random.key(0), 3).shape == (3, 452)
    r = CliRunner().invoke(app, ["bnn", "classify", "--dataset", "sonar", "--splits", "1", "--epochs", "2",
                                 "--family", "meanfield", "--out", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    assert 0 <= res["accuracy_mean"] <= 1 and (tmp_path / "c" / "reliability.png").exists()
    r = CliRunner().invoke(app, ["bnn", "uci", "--dataset", "nope", "--epochs", "1"])
    assert r.exit_code == 2 and "must be one of" in r.output
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = CliRunner().invoke(app, ["bnn", "uci", "--dataset", "yacht", "--splits", "1", "--epochs", "1", "--out",
                                 str(afile)])
    said = " ".join(r.output.split())  # rich wraps long lines
    assert r.exit_code == 2 and "cannot be used as a folder" in said and "test_ll" not in said


def test_hierarchical_prior_and_pixel_bernoulli_densities():
    from scipy import stats

    net = fp.bnn.mlp(jax.random.key(0), 3, 4, hidden=(5,))  # layers: W1 (5,3), b1 (5,), W2 (4,5), b2 (4,)
    model = fp.bnn.model(net, "bernoulli", prior=fp.bnn.GaussianPrior(hierarchical=True, precision_prior=(2.0, 3.0)))
    assert model.n_layers == 4 and model.dim == model.n_weights + 4
    theta = np.asarray(jax.random.normal(jax.random.key(1), (model.dim,)), np.float64)
    w, lam = theta[:model.n_weights], theta[model.n_weights:]
    expect = sum(stats.norm.logpdf(w[model.segments == l], 0, np.exp(-0.5 * lam[l])).sum() for l in range(4))
    expect += sum(stats.gamma.logpdf(np.exp(v), 2.0, scale=1 / 3.0) + v for v in lam)  # + log-Jacobian
    assert np.isclose(model.log_prior(jnp.asarray(theta, jnp.float32)), expect, rtol=1e-4)
    x = np.random.RandomState(0).normal(size=(6, 3)).astype(np.float32)
    y = (np.random.RandomState(1).uniform(size=(6, 4)) < 0.5).astype(np.float32)  # 4 pixels per example
    model.check_data(x, y)
    logits = np.asarray(model.outputs(jnp.asarray(theta[None], jnp.float32), x))[0]
    manual = (y * -np.logaddexp(0, -logits) + (1 - y) * -np.logaddexp(0, logits)).sum(1)
    assert np.allclose(model.log_likelihood_terms(jnp.asarray(theta, jnp.float32), x, y), manual, atol=1e-4)
    with pytest.raises(ValueError, match="outputs of shape \\(3,\\)"):
        model.check_data(x, y[:, :3])
