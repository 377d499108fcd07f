"""Data parallelism over several devices and processes (flowpost.engine.devices).

JAX fixes its device count when it starts, so each case runs in a fresh Python process
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU devices), and the
two-process case starts two such processes that join through ``jax.distributed``."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def run(code: str, devices: int = 4, extra_env: dict | None = None, timeout: int = 600) -> dict:
    """Run ``code`` in a fresh Python with ``devices`` CPU devices; it prints one JSON line last."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           **(extra_env or {})}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


FIT = """
    import json, jax, jax.numpy as jnp, numpy as np
    import flowpost as fp
    t = fp.Target(lambda u: -0.5 * jnp.sum(((u - jnp.arange(4.0)) / jnp.array([1.0, 2.0, 0.5, 3.0])) ** 2)
                  + jax.nn.softplus(2.0 * (u[0] + u[1])), 4, name="skewed")
    one = fp.fit(t, steps=100, num_samples=64, key=jax.random.key(0), progress=False)
    four = fp.fit(t, steps=100, num_samples=64, key=jax.random.key(0), progress=False, devices=4)
    print(json.dumps({"one": one.trace.loss.tolist(), "four": four.trace.loss.tolist(), "n": len(jax.devices()),
                      "status": [str(one.status), str(four.status)]}))
"""

BNN_VAE = """
    import json, jax, numpy as np
    import flowpost as fp
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x @ np.array([1.0, -1.0]) + 0.1 * rng.normal(size=64)).astype(np.float32)
    m = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 2, 1, hidden=(8,)))
    kw = dict(family="flow", epochs=5, batch_size=16, key=jax.random.key(0), progress=False)
    b1, b4 = fp.bnn.fit(m, x, y, **kw), fp.bnn.fit(m, x, y, devices=4, **kw)
    img = (rng.random((3, 64, 16)) < 0.3).astype(np.float32)
    d = fp.vae.data.ImageData("toy", img[0], img[1], img[2], (4, 4), True)
    model = fp.vae.VAEConfig(flow="iaf", latent=2, hidden=(16,), context=4, image_shape=(4, 4))
    cfg = fp.vae.TrainConfig(model=model, epochs=3, batch_size=16, warmup=0)
    v1 = fp.vae.train(cfg, None, data=d, progress=False, plots_at_end=False)
    v4 = fp.vae.train(cfg, None, data=d, progress=False, plots_at_end=False, devices=4)
    print(json.dumps({"bnn1": b1.trace.loss.tolist(), "bnn4": b4.trace.loss.tolist(),
                      "vae1": [h["train_loss"] for h in v1.history], "vae4": [h["train_loss"] for h in v4.history]}))
"""


def close(a, b):
    """Equal to float32 rounding: a sum split over 4 devices is added in another order."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.size > 0
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-4 * np.max(np.abs(a)))


def test_sharded_fit_follows_the_single_device_trajectory():
    out = run(FIT)
    assert out["n"] == 4 and out["status"] == ["completed", "completed"]  # all 100 steps compared
    assert len(out["one"]) == 100
    close(out["one"], out["four"])


def test_sharded_bnn_and_vae_follow_the_single_device_trajectory():
    out = run(BNN_VAE)
    close(out["bnn1"], out["bnn4"])
    close(out["vae1"], out["vae4"])


def test_devices_errors_are_clear():
    out = run("""
        import json, jax, jax.numpy as jnp
        import flowpost as fp
        t = fp.Target(lambda u: -jnp.sum(u**2), 2)
        said = []
        for kw in ({"devices": 8}, {"devices": 4, "num_samples": 30}):
            try:
                fp.fit(t, steps=5, key=jax.random.key(0), progress=False, **kw)
            except ValueError as e:
                said.append(str(e))
        print(json.dumps(said))
    """)
    assert "devices=8 but JAX sees 4" in out[0] and "xla_force_host_platform_device_count" in out[0]
    assert "`num_samples` (30) must be a multiple of devices (4)" in out[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TWO_PROCESS = """
    import json, os, sys, jax, jax.numpy as jnp
    import flowpost as fp
    pid = int(os.environ["FP_PID"])
    fp.engine.devices.initialize(f"127.0.0.1:{os.environ['FP_PORT']}", num_processes=2, process_id=pid)
    t = fp.Target(lambda u: -0.5 * jnp.sum(((u - jnp.arange(3.0)) / jnp.array([1.0, 2.0, 0.5])) ** 2), 3)
    r = fp.fit(t, family="fullrank", steps=100, num_samples=64, key=jax.random.key(0), progress=False, devices=4)
    draws = r.sample(jax.random.key(1), 5)["theta"]
    if os.environ.get("FP_OUT"):
        r.save(os.environ["FP_OUT"])  # every process calls it; process 0 writes
    print(json.dumps({"pid": pid, "devices": len(jax.devices()), "local": len(jax.local_devices()),
                      "loss": r.trace.loss.tolist(), "draws": draws.tolist()}))
"""


def test_two_processes_match_one(tmp_path):
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "FP_PORT": str(port), "FP_OUT": str(tmp_path / "run")}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(TWO_PROCESS)], env={**env, "FP_PID": str(i)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    single = run(TWO_PROCESS.replace(
        'fp.engine.devices.initialize(f"127.0.0.1:{os.environ[\'FP_PORT\']}", num_processes=2, process_id=pid)', ""),
        extra_env={"FP_PID": "0"})
    assert [o["devices"] for o in outs] == [4, 4] and [o["local"] for o in outs] == [2, 2]
    close(outs[0]["loss"], single["loss"])
    close(outs[1]["loss"], single["loss"])
    np.testing.assert_allclose(outs[0]["draws"], single["draws"], rtol=1e-4, atol=1e-5)
    # one result folder, written by process 0, that loads on one device
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert {"q.eqx", "meta.json", "trace.npz"} <= {p.name for p in (tmp_path / "run").iterdir()}
    import jax
    import jax.numpy as jnp

    import flowpost as fp

    t = fp.Target(lambda u: -0.5 * jnp.sum(((u - jnp.arange(3.0)) / jnp.array([1.0, 2.0, 0.5])) ** 2), 3)
    back = fp.load(tmp_path / "run", target=t)  # restored on this process's one device
    assert back.steps == 100
    np.testing.assert_allclose(back.sample(jax.random.key(1), 5)["theta"], single["draws"], rtol=1e-4, atol=1e-5)


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
