"""The one training engine: its rule on non-finite values, Ctrl-C, trainable vs frozen
arrays, and the checkpoint format, checked through the engine and through each of the
four trainers that call it (fp.fit, fp.bnn, fp.vae, fp.flows.fit_to_data)."""

import json
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowpost as fp
from flowpost import engine
from flowpost.engine import Status, checkpoint

BAD = 7  # the step whose update is NaN in every non-finite case below


def nan_at(step: int, rate: float = 1e-2):
    """Adam whose update of ``step`` (0-based) is NaN: the loss and gradient stay finite."""
    return optax.chain(optax.adam(rate), optax.scale_by_schedule(lambda i: jnp.where(i == step, jnp.nan, 1.0)))


def quadratic_run(total, chunk, optimizer):
    def loss_fn(p, key, batch, step):
        return jnp.sum((p - 3.0) ** 2), jnp.sum(p)

    chunks = engine.runner(engine.scan_chunks, engine.make_step(loss_fn, optimizer))
    return engine.run(chunks, engine.init(jnp.zeros(3), optimizer, jax.random.key(0)), total, chunk=chunk)


@pytest.mark.parametrize("chunk", [4, 5, 100])  # the failure at the end, inside or at the start of a chunk
def test_nonfinite_keeps_the_state_after_the_last_finite_step(chunk):
    out = quadratic_run(50, chunk, nan_at(BAD))
    clean = quadratic_run(BAD, chunk, nan_at(-1))  # the same steps 0..6, never a NaN
    assert out.status == Status.NONFINITE and out.failed == [BAD] and int(out.state.step) == BAD
    assert out.done == BAD and out.info.loss.shape == (BAD,)
    np.testing.assert_allclose(out.state.params, clean.state.params, rtol=1e-6)
    np.testing.assert_allclose(out.info.loss, clean.info.loss, rtol=1e-6)
    assert out.failed_info is not None and not np.isfinite(out.failed_info.update_norm)


def test_completed_run_is_unguarded_and_exact():
    out = quadratic_run(30, 7, optax.adam(1e-2))
    assert out.status == Status.COMPLETED and out.failed == [None] and out.done == 30
    assert [n for n, _ in out.timings] == [7, 7, 7, 7, 2]
    # the guard changes nothing on finite steps
    step = engine.make_step(lambda p, k, b, s: (jnp.sum((p - 3.0) ** 2), jnp.sum(p)), optax.adam(1e-2))
    state = engine.init(jnp.zeros(3), optax.adam(1e-2), jax.random.key(0))
    guarded, _ = jax.lax.scan(lambda s, _: engine.guard(step)(s, None), state, None, length=30)
    np.testing.assert_array_equal(guarded.params, out.state.params)


def test_partition_keeps_frozen_arrays_from_the_optimiser():
    dim = 3
    t = fp.Target(lambda u: -0.5 * jnp.sum(((u - jnp.arange(dim)) / jnp.array([1.0, 10.0, 0.1])) ** 2), dim)
    start = fp.vi.laplace(t.log_prob, dim)
    q = fp.vi.families.make("flow", dim, start.mode, start.chol, key=jax.random.key(0))
    params, build = fp.vi.flat_params(q)
    frozen = [m for m in jax.tree.leaves(q, is_leaf=lambda m: isinstance(m, fp.flows.Frozen))
              if isinstance(m, fp.flows.Frozen)]
    n_frozen = sum(a.size for m in frozen for a in jax.tree.leaves(eqx.filter(m, eqx.is_inexact_array)))
    n_all = sum(a.size for a in jax.tree.leaves(eqx.filter(q, eqx.is_inexact_array)))
    assert n_frozen >= dim * dim and params.size == n_all - n_frozen
    # weight decay through `optimizer=` shrinks the trained arrays, never the Laplace whitening
    r = fp.fit(t, steps=20, optimizer=optax.adamw(1e-2, weight_decay=0.5), key=jax.random.key(0), progress=False)

    def frozen_arrays(q):
        (m,) = [m for m in jax.tree.leaves(q, is_leaf=lambda m: isinstance(m, fp.flows.Frozen))
                if isinstance(m, fp.flows.Frozen)]
        return jax.tree.leaves(eqx.filter(m, eqx.is_array))

    _, k_init, _ = jax.random.split(fp.engine.fast_key(jax.random.key(0)), 3)  # fit's key for the family
    built = fp.vi.families.make("flow", dim, r.start.mode, r.start.chol, key=k_init)
    for a, b in zip(frozen_arrays(built), frozen_arrays(r.q), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(fp.vi.flat_params(built)[0], fp.vi.flat_params(r.q)[0])  # the rest did train
    assert r.status == Status.COMPLETED


# -- each trainer, the same two cases ---------------------------------------------------
def _gauss():
    return fp.Target(lambda u: -0.5 * jnp.sum((u - 1.0) ** 2), 2, name="unit")


def _bnn_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0]) + 0.1 * rng.normal(size=40)).astype(np.float32)
    return fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 2, 1, hidden=(4,))), x, y


def _vae_config(**kw):
    model = fp.vae.VAEConfig(flow="planar", arch="mlp", latent=2, hidden=(16,), context=4, image_shape=(4, 4))
    return fp.vae.TrainConfig(model=model, epochs=kw.pop("epochs", 3), batch_size=8, warmup=0, patience=10, **kw)


def _vae_data():
    rng = np.random.default_rng(0)
    img = (rng.random((3, 32, 16)) < 0.3).astype(np.float32)
    return fp.vae.data.ImageData("toy", img[0], img[1], img[2], (4, 4), True)


def _trainers():
    """name -> (run with an optimizer) -> (status, message, steps taken, finite state?)"""

    def fit(opt):
        r = fp.fit(_gauss(), family="meanfield", steps=40, chunk=10, optimizer=opt, key=jax.random.key(0))
        return r.status, r.message, r.steps, fp.vi.flat_params(r.q)[0]

    def bnn(opt):
        model, x, y = _bnn_data()
        r = fp.bnn.fit(model, x, y, epochs=6, batch_size=8, optimizer=opt, key=jax.random.key(0), chunk=1)
        return r.status, r.message, None, fp.vi.flat_params(r.q)[0]

    def vae(opt):
        r = fp.vae.train(_vae_config(), None, data=_vae_data(), optimizer=opt, plots_at_end=False)
        return r.status, r.message, None, jax.flatten_util.ravel_pytree(eqx.filter(r.model, eqx.is_inexact_array))[0]

    def flows(opt):
        flow = fp.flows.realnvp(jax.random.key(0), 2, layers=2, hidden=(8,))
        x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            f, losses = fp.flows.fit_to_data(flow, jax.random.key(0), x, steps=40, chunk=10, optimizer=opt,
                                             progress=True)
        said = " ".join(str(w.message) for w in seen)
        status = (Status.NONFINITE if "not finite" in said else Status.INTERRUPTED if "interrupted" in said
                  else Status.COMPLETED)
        return status, said, len(losses), jax.flatten_util.ravel_pytree(eqx.filter(f, eqx.is_inexact_array))[0]

    return {"fit": fit, "bnn": bnn, "vae": vae, "flows": flows}


@pytest.mark.parametrize("name", ["fit", "bnn", "vae", "flows"])
def test_every_trainer_stops_on_a_nonfinite_update_at_its_step(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        status, message, steps, params = _trainers()[name](nan_at(BAD))
    assert status == Status.NONFINITE, (status, message)
    assert "non-finite" in message or "not finite" in message
    if name == "vae":  # 32 images, batches of 8: step 7 is the last of epoch 2
        assert "epoch 2, step 4" in message, message
    else:
        assert f"at step {BAD}" in message, message
    if steps is not None:
        assert steps == BAD
    assert bool(jnp.all(jnp.isfinite(params)))


@pytest.mark.parametrize("name", ["fit", "bnn", "vae", "flows"])
def test_every_trainer_keeps_its_state_on_ctrl_c(name, monkeypatch):
    calls = []

    def interrupt(self, done, **values):  # Ctrl-C arrives after the second chunk (or epoch)
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.ProgressBar, "update", interrupt)
    monkeypatch.setattr(engine.ProgressBar, "__enter__", lambda self: self)
    monkeypatch.setattr(engine.ProgressBar, "__exit__", lambda self, *exc: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        status, message, steps, params = _trainers()[name](optax.adam(1e-2))
    assert status == Status.INTERRUPTED, (status, message)
    assert "interrupted" in message
    if steps is not None:
        assert steps == 20  # two chunks of 10
    assert bool(jnp.all(jnp.isfinite(params)))


# -- checkpoints --------------------------------------------------------------------------
def test_checkpoint_files_are_strict_json_and_atomic(tmp_path):
    checkpoint.write_json(tmp_path / "a.json", {"x": float("nan"), "y": np.float32(2.5), "z": (1, np.int64(2))})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": None, "y": 2.5, "z": [1, 2]}
    tree = {"w": jnp.arange(3.0), "b": jnp.ones((2, 2))}
    checkpoint.write_tree(tmp_path / "t.eqx", tree, {"note": "hi", "loss": float("inf")})
    header = checkpoint.read_header(tmp_path / "t.eqx")
    assert header["format"] == checkpoint.FORMAT and header["note"] == "hi" and header["loss"] is None
    back = checkpoint.read_tree(tmp_path / "t.eqx", jax.tree.map(jnp.zeros_like, tree))
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "t.eqx"]  # no temporary files left
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.read_tree(tmp_path / "t.eqx", {"w": jnp.zeros(4), "b": jnp.zeros((2, 2))})


def test_result_folder_is_replaced_whole_and_foreign_folders_refused(tmp_path):
    r = fp.fit(_gauss(), family="meanfield", steps=30, key=jax.random.key(0), progress=False)
    r.save(tmp_path / "run")
    (tmp_path / "run" / "stale.png").write_bytes(b"old")  # a file of an earlier run
    r.save(tmp_path / "run")
    assert not (tmp_path / "run" / "stale.png").exists()
    assert {"q.eqx", "meta.json", "trace.npz", "posterior.nc"} <= {p.name for p in (tmp_path / "run").iterdir()}
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds other files"):
        r.save(other)
    assert [p.name for p in other.iterdir()] == ["cat.jpg"]
    back = fp.load(tmp_path / "run", target=_gauss())
    assert back.status == Status.COMPLETED and back.steps == 30
    np.testing.assert_array_equal(fp.vi.flat_params(back.q)[0], fp.vi.flat_params(r.q)[0])


def test_released_formats_still_load(tmp_path):
    """A result folder of format 4 (bare leaves in q.eqx, metadata in meta.json, as the
    released writer made it) and a VAE checkpoint of format "flowpost-vae/1"."""
    t = _gauss()
    r = fp.fit(t, family="fullrank", steps=30, key=jax.random.key(0), progress=False)
    old = tmp_path / "old"
    old.mkdir()
    eqx.tree_serialise_leaves(old / "q.eqx", r.q)
    meta = {"format": 4, "target": "unit", "builtin": None, "dim": 2, "family": "fullrank", "objective": "elbo",
            "steps": 30, "message": "stopped: the loss ... at step 30", "seconds": float("nan"), "start": None,
            "structure": checkpoint.structure(r.q), "static": checkpoint.settings(r.q)}
    (old / "meta.json").write_text(json.dumps(meta))  # NaN as the released writer wrote it
    np.savez(old / "trace.npz", **r.trace._asdict())
    back = fp.load(old, target=t)
    assert back.status == Status.NONFINITE and np.isnan(back.seconds)
    np.testing.assert_array_equal(fp.vi.flat_params(back.q)[0], fp.vi.flat_params(r.q)[0])

    model = fp.vae.make_vae(_vae_config().model, jax.random.key(0))
    path = tmp_path / "best.eqx"
    with open(path, "wb") as f:
        f.write(json.dumps({"format": "flowpost-vae/1", "config": _vae_config().to_dict(), "epoch": 1}).encode() + b"\n")
        eqx.tree_serialise_leaves(f, model)
    assert fp.vae.runs.read_meta(path)["epoch"] == 1
    loaded = fp.vae.runs.read(path, fp.vae.make_vae(_vae_config().model, jax.random.key(1)))
    for a, b in zip(jax.tree.leaves(eqx.filter(loaded, eqx.is_array)), jax.tree.leaves(eqx.filter(model, eqx.is_array))):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="not a flowpost VAE checkpoint"):
        fp.vae.runs.read_meta(old / "q.eqx")


def test_status_is_a_string():
    assert Status.EARLY_STOP == "early_stop" and f"{Status.NONFINITE}" == "nonfinite"
