"""fp.vae: flow-VAEs. Exactness of log q, bounds, the NLL estimator, checkpoints, bad input, CLI."""

import json
import math
import os
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowpost as fp
from flowpost import data as fpdata
from flowpost.experiments.vae import data as vdata
from flowpost.experiments.vae import likelihoods, objectives, runs
from flowpost.experiments.vae.evaluate import log_likelihood
from flowpost.experiments.vae.model import VAE
from flowpost.experiments.vae.posterior import Posterior, make_flow

vae = fp.vae
DATA = pathlib.Path(os.environ.get("FLOWPOST_DATA", "")).expanduser()
needs_data = pytest.mark.skipif(not (DATA / "mnist" / "binarized_mnist.npz").is_file(),
                                reason="MNIST not found under FLOWPOST_DATA")

SMALL_FLOW_OPTIONS = {
    "none": {}, "planar": {"layers": 3}, "iaf": {"layers": 2, "hidden": (12, 12)},
    "sylvester-o": {"layers": 2, "m": 3}, "sylvester-h": {"layers": 2, "n_householder": 3},
    "sylvester-t": {"layers": 2}, "spline": {"layers": 2, "hidden": (12, 12), "knots": 4},
}


def _perturb(tree, seed, scale):
    """Every trainable array plus N(0, scale^2) noise (numpy: nothing to compile), so that
    the flows leave the identity they start at."""
    rng = np.random.default_rng(seed)
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + scale * rng.normal(size=a.shape)), params)
    return eqx.combine(params, static)


@pytest.mark.parametrize("flow", vae.FLOWS)
def test_log_q_is_base_density_minus_autodiff_logdet(flow, x64):
    """log q(zK|x) == log N(z0; mu, sigma^2) - log|det d zK / d z0|, the determinant of the
    whole z0 -> zK map computed by jax.jacfwd + slogdet in float64, with the flow's
    parameters amortised from a context h."""
    flow_module = make_flow(flow, jax.random.key(0), 5, 3, **SMALL_FLOW_OPTIONS[flow])
    post = _perturb(Posterior(flow_module, 5), 1, 0.3)
    rng = np.random.default_rng(2)
    mu, log_sigma, h = (jnp.asarray(rng.normal(size=n)) for n in (5, 5, 3))
    key = jax.random.key(3)

    @eqx.filter_jit
    def compute(post):
        z, log_q = post.sample_and_log_prob(key, mu, log_sigma, h, 4)
        z0 = mu + jnp.exp(log_sigma) * jax.random.normal(key, (4, 5), jnp.float64)
        f = lambda v: post.transform(v, h)[0]  # noqa: E731
        return z, log_q, z0, jax.vmap(f)(z0), jax.vmap(jax.jacfwd(f))(z0)

    z, log_q, z0, fz0, jac = compute(post)
    assert z.dtype == jnp.float64 and z.shape == (4, 5) and log_q.shape == (4,)
    logdets = np.linalg.slogdet(np.asarray(jac))[1]
    base = np.sum(-0.5 * ((np.asarray(z0) - np.asarray(mu)) / np.exp(np.asarray(log_sigma))) ** 2
                  - np.asarray(log_sigma) - 0.5 * math.log(2 * math.pi), axis=1)
    np.testing.assert_allclose(np.asarray(z), np.asarray(fz0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(log_q), base - logdets, rtol=1e-9, atol=1e-9)
    if flow != "none":
        assert np.min(np.abs(logdets)) > 1e-3  # the flow is not the identity: the check has teeth


@pytest.fixture(scope="module")
def trained():
    """A small MLP VAE trained for 4 epochs on 2000 MNIST images."""
    if not (DATA / "mnist" / "binarized_mnist.npz").is_file():
        pytest.skip("MNIST not found under FLOWPOST_DATA")
    cfg = vae.TrainConfig(model=vae.VAEConfig(flow="none", latent=16, hidden=(128,), context=4),
                          epochs=4, warmup=0, learning_rate=1e-3, limit=2000)
    result = vae.train(cfg, progress=False)
    return result.model, vae.load_data("mnist", limit=2000)


def test_iwae_k1_is_the_elbo_and_grows_with_k(trained):
    model, d = trained
    x = jnp.asarray(d.test[:300])
    key = jax.random.key(5)

    @eqx.filter_jit  # one compiled program
    def bounds(model):
        k2 = jax.random.key(6)
        return (objectives.elbo(model, x, key)[1], objectives.iwae(model, x, key, 1)[1],
                [jnp.mean(objectives.iwae(model, x, k2, k)[1]) for k in (1, 5, 50)])

    b_elbo, b_iw1, means = bounds(model)
    np.testing.assert_array_equal(np.asarray(b_elbo), np.asarray(b_iw1))
    means = [float(m) for m in means]
    assert means[0] < means[1] - 0.5 and means[1] < means[2] - 0.3, means
    assert -means[0] < 250  # it did learn (an untrained model is at ~550 nats)


class _LinearEncoder(eqx.Module):
    a: jax.Array
    c: jax.Array
    log_sigma: jax.Array
    latent: int = eqx.field(static=True)
    context: int = eqx.field(static=True)

    def __call__(self, x):
        return self.a @ x + self.c, self.log_sigma, jnp.zeros((1,), x.dtype)


class _LinearDecoder(eqx.Module):
    w: jax.Array
    b: jax.Array
    latent: int = eqx.field(static=True)

    def __call__(self, z):
        return jnp.stack([self.w @ z + self.b, jnp.zeros_like(self.b)], axis=1)


def test_nll_estimator_is_unbiased_on_a_linear_gaussian_vae(x64):
    """p(z) = N(0, I_2), p(x|z) = N(Wz + b, s^2 I_3): log p(x) = log N(x; b, W W^T + s^2 I).
    The importance-sampling p-hat is unbiased for p(x): the mean of many independent
    p-hat / p(x) (10 draws each, from an imperfect encoder: diagonal and too wide) is 1 within 4
    standard errors; log p-hat with 20000 draws is within 0.01 nats of the exact value."""
    rng = np.random.default_rng(0)
    w, b, s = rng.normal(size=(3, 2)), rng.normal(size=3), 0.7
    post_cov = np.linalg.inv(np.eye(2) + w.T @ w / s**2)
    a = post_cov @ w.T / s**2  # exact posterior mean a (x - b); q's scale: 1.5 x the marginal sd, diagonal
    enc = _LinearEncoder(jnp.asarray(a), jnp.asarray(-a @ b), jnp.asarray(np.log(1.5 * np.sqrt(np.diag(post_cov)))),
                         2, 1)
    dec = _LinearDecoder(jnp.asarray(w), jnp.asarray(b), 2)
    model = VAE(enc, dec, None, likelihoods.Gaussian(log_scale=math.log(s)))
    x = np.array([0.5, -1.0, 2.0])
    cov = w @ w.T + s**2 * np.eye(3)
    exact = -0.5 * (x - b) @ np.linalg.solve(cov, x - b) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]

    reps = 4000
    lp_hat = log_likelihood(model, np.tile(x, (reps, 1)), jax.random.key(0), samples=10, batch=1000)
    ratio = np.exp(lp_hat - exact)
    se = ratio.std(ddof=1) / math.sqrt(reps)
    assert 0.02 < ratio.std() and abs(ratio.mean() - 1) < 4 * se, (ratio.mean(), se)
    assert np.mean(lp_hat) < exact - 0.01  # log p-hat itself is biased low (Jensen): the test can tell
    big = log_likelihood(model, x[None], jax.random.key(1), samples=20000, chunk=5000)
    assert abs(big[0] - exact) < 0.01


def test_discretized_logistic_is_a_distribution_over_grey_levels():
    lik = likelihoods.DiscretizedLogistic()
    levels = jnp.arange(256) / 255.0
    for raw_mu, log_s in ((0.3, -3.0), (-4.0, -6.5), (5.0, 0.5)):
        params = jnp.broadcast_to(jnp.array([raw_mu, log_s]), (256, 2))
        per_level = jax.vmap(lambda v, p: lik.log_prob(v[None], p[None]))(levels, params)
        assert abs(float(jnp.sum(jnp.exp(per_level))) - 1.0) < 2e-3
    with pytest.raises(ValueError, match="grey levels"):
        lik.check(np.array([[0.5 / 255]]), "x")


@needs_data
def test_loaders_shapes_and_splits():
    d = vdata.binarized_mnist()
    assert (d.train.shape, d.valid.shape, d.test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    assert d.train.dtype == np.float32 and abs(d.train.mean() - 0.131) < 0.002
    f = vdata.frey_faces()
    assert (f.train.shape, f.valid.shape, f.test.shape) == ((1565, 560), (200, 560), (200, 560))
    likelihoods.DiscretizedLogistic().check(f.train)


@needs_data
def test_corrupt_or_truncated_data_file_is_rejected(monkeypatch, tmp_path):
    monkeypatch.setattr(fpdata, "_download", lambda url, dest: (_ for _ in ()).throw(AssertionError(url)))
    monkeypatch.setenv("FLOWPOST_DATA", str(tmp_path))
    (tmp_path / "mnist").mkdir()
    raw = (DATA / "mnist" / "binarized_mnist.npz").read_bytes()
    (tmp_path / "mnist" / "binarized_mnist.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="checksum mismatch"):
        vae.load_data("mnist")
    # an explicit file skips the registry checksum: truncation is still a clear error
    with pytest.raises(ValueError, match="truncated or corrupt"):
        vdata.binarized_mnist(file=tmp_path / "mnist" / "binarized_mnist.npz")
    bad = tmp_path / "grey.npz"
    arr = np.zeros((3, 784), np.uint8)
    arr[0, 0] = 7
    np.savez(bad, train=arr, valid=arr, test=arr)
    with pytest.raises(ValueError, match=r"values in \{0, 1\}"):
        vdata.binarized_mnist(file=bad)


def _tiny(flow="none", **kw):
    model = vae.VAEConfig(flow=flow, latent=4, hidden=(32,), context=4,
                          flow_options=tuple(SMALL_FLOW_OPTIONS[flow].items()))
    return vae.TrainConfig(model=model, **{"epochs": 2, "batch_size": 50, "limit": 300, "warmup": 5, **kw})


def _images(n=300, d=784, seed=0):
    rng = np.random.default_rng(seed)
    return vae.ImageData("mnist", *((rng.random((n, d)) < 0.2).astype(np.float32) for _ in range(3)),
                         (28, 28), binary=True)


def test_validation_elbo_ignores_the_padding_and_limit_spreads_over_the_split():
    """The last validation batch is padded by repeating its last image; those copies once
    counted (700 images: 195.4 reported vs 151.5 true). And `limit` takes images spread
    over a split: the MNIST test file is sorted by digit."""
    d = _images(n=501, seed=1)
    valid = d.valid.copy()
    valid[-1] = 1.0  # an atypical last image, repeated 499 times in the padded batch
    d = vae.ImageData("mnist", d.train, valid, d.test, (28, 28), True)
    r = vae.train(_tiny(epochs=1, limit=None), data=d, progress=False)
    reported = r.history[-1]["valid_neg_elbo"]
    true = -float(np.mean(fp.vae.evaluate.elbo(r.model, valid, jax.random.key(5))))
    assert abs(reported - true) < 3.0, (reported, true)
    labels = np.repeat(np.arange(10), 100)  # sorted like the MNIST test file
    assert len(np.unique(vdata.subset(labels, 50))) == 10
    np.testing.assert_array_equal(vdata.subset(labels, 50), vdata.subset(labels, 50))


def test_small_latents_numpy_configs_and_nan_grey_images():
    """sylvester-o's default M = 16 is capped at the latent size; NumPy scalars in a
    config become Python numbers (they failed at the first JSON checkpoint write); NaN
    grey levels are refused (NaN passed the range comparisons)."""
    f = make_flow("sylvester-o", jax.random.key(0), 4, 8)
    assert f is not None
    cfg = vae.TrainConfig(model=vae.VAEConfig(latent=np.int64(4)), epochs=np.int64(3), learning_rate=np.float32(1e-3))
    json.dumps(cfg.to_dict())
    assert type(cfg.model.latent) is int and type(cfg.epochs) is int
    x = np.zeros((2, 4), np.float32)
    x[0, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        likelihoods.DiscretizedLogistic().check(x)


def test_a_run_on_your_own_images_is_never_scored_on_mnist(tmp_path):
    """Such a run was recorded as dataset 'mnist', and `vae eval` scored it on MNIST."""
    own = vae.ImageData("shapes", *(np.asarray(a) for a in (_images(120, seed=2).train, _images(60, seed=3).valid,
                                                             _images(40, seed=4).test)), (28, 28), True)
    vae.train(_tiny(epochs=1, limit=None), out=tmp_path / "own", data=own, progress=False)
    with pytest.raises(ValueError, match="trained on your own images.*pass the same `data=`"):
        vae.evaluate_run(tmp_path / "own", samples=10)
    with pytest.raises(ValueError, match="resume it with the same `data=`"):
        vae.train(_tiny(epochs=2, limit=None), out=tmp_path / "own", progress=False)
    r = vae.evaluate_run(tmp_path / "own", samples=10, data=own)
    assert r["n_images"] == 40 and r["dataset"] == "own data" and 0 < r["nll"] <= r["neg_elbo"] + 1.0


def test_non_binary_images_are_rejected_before_training():
    d = _images()
    grey = vae.ImageData("mnist", d.train * 0.5, d.valid, d.test, (28, 28), True)
    with pytest.raises(ValueError, match=r"data.train.*values in \{0, 1\}"):
        vae.train(_tiny(), data=grey, progress=False)
    with pytest.raises(ValueError, match=r"`x`: a Bernoulli decoder needs images with values in \{0, 1\}"):
        likelihoods.Bernoulli().check(d.test * 0.5, "x")


def test_resume_is_exact_and_checkpoints_are_checked(tmp_path):
    d = _images()
    straight = vae.train(_tiny(epochs=2), tmp_path / "a", data=d, progress=False,
                         plots_at_end=False)
    first = vae.train(_tiny(epochs=1), tmp_path / "b", data=d, progress=False, plots_at_end=False)
    assert first.epochs_done == 1
    resumed = vae.train(_tiny(epochs=2), tmp_path / "b", data=d, progress=False,
                        plots_at_end=False)
    assert resumed.epochs_done == 2 and [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(jax.tree.leaves(eqx.filter(straight.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(resumed.model, eqx.is_array))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert straight.history[1]["valid_neg_elbo"] == resumed.history[1]["valid_neg_elbo"]
    loaded, cfg, meta = vae.load(tmp_path / "b")
    assert cfg.model.flow == "none" and meta["epoch"] == resumed.best_epoch
    x = jnp.asarray(d.test[:20])
    np.testing.assert_array_equal(np.asarray(objectives.elbo(loaded, x, jax.random.key(0))[1]),
                                  np.asarray(objectives.elbo(resumed.model, x, jax.random.key(0))[1]))

    # a checkpoint of another architecture: a clear error, nothing overwritten
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").glob("*.eqx")}
    with pytest.raises(ValueError, match=r"another run \(flow: checkpoint 'none' vs requested 'iaf'"):
        vae.train(_tiny(epochs=3, flow="iaf"), tmp_path / "b", data=d, progress=False)
    # ... or of other training settings: resuming may change only epochs, patience, learning rate
    for change in ({"objective": "iwae", "k": 2}, {"batch_size": 16}, {"seed": 1}, {"warmup": 0}):
        with pytest.raises(ValueError, match=f"another run \\({next(iter(change))}: checkpoint"):
            vae.train(_tiny(epochs=3, **change), tmp_path / "b", data=d, progress=False)
    other = vae.make_vae(_tiny(flow="iaf").model, jax.random.key(0))
    with pytest.raises(ValueError, match="does not match the model's architecture"):
        runs.read(tmp_path / "b" / "best.eqx", other)

    # a run that diverges (absurd learning rate) stops and leaves the trained run as it was
    failed = vae.train(_tiny(epochs=4, learning_rate=1e30), tmp_path / "b", data=d,
                       progress=False, plots_at_end=False)
    assert failed.message.startswith("stopped: non-finite"), failed.message
    assert failed.status == "nonfinite"
    assert failed.epochs_done == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").glob("*.eqx")} == before


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="`flow` must be one of"):
        vae.VAEConfig(flow="maf")
    with pytest.raises(ValueError, match="`arch` must be one of"):
        vae.VAEConfig(arch="resnet")
    with pytest.raises(ValueError, match="`k`"):
        vae.TrainConfig(objective="elbo", k=5)
    with pytest.raises(ValueError, match="`batch_size`"):
        vae.train(_tiny(batch_size=1000), data=_images(), progress=False)
    with pytest.raises(ValueError, match="`hidden` must give at least one hidden-layer width"):
        vae.VAEConfig(hidden=())
    with pytest.raises(ValueError, match="`image_shape` must be \\(height, width\\)"):
        vae.VAEConfig(image_shape=(784,))
    with pytest.raises(ValueError, match="`height` must be a positive integer"):
        vae.VAEConfig(image_shape=(0, 28))
    d = _images()
    # rows that do not match image_shape, and an empty split: named before anything compiles
    short = vae.ImageData("mnist", d.train[:, :780], d.valid[:, :780], d.test[:, :780], (28, 28), True)
    with pytest.raises(ValueError, match=r"`data.train` must hold at least one image as a row of 784 values"):
        vae.train(_tiny(), data=short, progress=False)
    empty = vae.ImageData("mnist", d.train, d.valid[:0], d.test, (28, 28), True)
    with pytest.raises(ValueError, match=r"`data.valid` must hold at least one image.*shape \(0, 784\)"):
        vae.train(_tiny(), data=empty, progress=False)


def test_gated_conv_networks_shapes():
    for shape in ((28, 28), (28, 20)):
        cfg = vae.VAEConfig(flow="sylvester-o", arch="gated", latent=8, image_shape=shape, likelihood="logistic",
                            flow_options=(("layers", 1), ("m", 4)))
        model = eqx.filter_eval_shape(vae.make_vae, cfg, jax.random.key(0))  # shapes only: nothing compiles
        x = jax.ShapeDtypeStruct((shape[0] * shape[1],), jnp.float32)
        mu, log_sigma, h = eqx.filter_eval_shape(lambda m, v: m.encoder(v), model, x)
        assert mu.shape == (8,) and h.shape == (256,)
        out = eqx.filter_eval_shape(lambda m, v: m.decoder(v), model, mu)
        assert out.shape == (shape[0] * shape[1], 2)
        lq = eqx.filter_eval_shape(lambda m, v: m.sample_and_log_q(v, jax.random.key(0), 3)[1], model, x)
        assert lq.shape == (3,)


@needs_data
def test_cli_train_and_eval(tmp_path):
    from typer.testing import CliRunner

    from flowpost.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    r = runner.invoke(app, ["vae", "train", "--flow", "none", "--epochs", "1", "--limit", "200",
                            "--latent", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert {"checkpoint.eqx", "best.eqx", "history.json", "summary.json", "samples.png",
            "reconstructions.png"} <= {p.name for p in out.iterdir()}
    # strict JSON (one epoch: no compile time to report, null rather than NaN)
    summary = json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert summary["compile_seconds"] is None and summary["epochs_done"] == 1
    r = runner.invoke(app, ["vae", "eval", str(out), "--samples", "20", "--limit", "50"])
    assert r.exit_code == 0, r.output
    ev = json.loads((out / "eval.json").read_text())
    assert ev["n_images"] == 50 and ev["samples"] == 20 and ev["flow"] == "none"
    assert 0 < ev["nll"] < ev["neg_elbo"] < 800
    # a re-run with nothing left to do keeps the summary of the run that trained
    before = (out / "summary.json").read_bytes()
    r = runner.invoke(app, ["vae", "train", "--flow", "none", "--epochs", "1", "--limit", "200",
                            "--latent", "4", "--out", str(out)])
    assert r.exit_code == 0 and "nothing to do" in r.output
    assert (out / "summary.json").read_bytes() == before
    # a run that diverges fails as a command (exit 1) and keeps the last good checkpoint
    ckpt = (out / "checkpoint.eqx").read_bytes()
    r = runner.invoke(app, ["vae", "train", "--flow", "none", "--epochs", "2", "--limit", "200",
                            "--latent", "4", "--learning-rate", "1e30", "--out", str(out)])
    assert r.exit_code == 1 and "diverged" in r.output, r.output
    assert (out / "checkpoint.eqx").read_bytes() == ckpt
    r = runner.invoke(app, ["vae", "train", "--flow", "realnvp", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "`flow` must be one of" in r.output
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["vae", "train", "--limit", "200", "--epochs", "1", "--out", str(tmp_path / "afile")])
    assert r.exit_code == 2 and "is not a folder" in " ".join(r.output.split())
