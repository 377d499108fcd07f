"""Steps per second against the number of devices (data parallelism, ``devices=N``).

Each device count runs in its own Python process (JAX fixes its devices at start-up). On
a CPU the devices are forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``): they share the machine's cores,
so this measures the overhead of the sharded program more than a speed-up; on GPUs
(``--platform gpu``) each device is a real one.

Workloads (compiled first; the timing is of the steps after compilation):

- ``fit``: ``fp.fit`` of a logistic regression over ``--rows`` rows, full data every
  step, 256 draws per step split over the devices (the time of ``2 x steps`` steps, as
  the difference of a ``3 x steps`` and a ``steps`` fit, so compilation cancels);
- ``bnn``: ``fp.bnn.fit`` of a 2 x 256 MLP, batches of 1024 rows split over the devices.

    python benchmarks/scaling.py [--devices 1,2,4] [--platform cpu|gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from _common import machine_info, write_json
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"

WORKER = """
    import json, sys, time, jax, jax.numpy as jnp, numpy as np
    import flowpost as fp
    devices, rows, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    y = (rng.random(rows) < 1 / (1 + np.exp(-x @ rng.normal(size=20) / 3))).astype(np.float32)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def log_lik(w, row):
        xi, yi = row
        logit = xi @ w
        return yi * logit - jnp.logaddexp(0.0, logit)

    t = fp.targets.from_rows(log_lik, (x, y), 20, log_prior=lambda w: -0.5 * jnp.sum(w**2))
    kw = dict(family="flow", num_samples=256, key=jax.random.key(0), progress=False, subsample=False,
              devices=None if devices == 1 else devices)
    def timed(n):  # every fp.fit call compiles its own program: the difference of two budgets
        t0 = time.perf_counter()
        fp.fit(t, steps=n, **{**kw, "chunk": n})
        return time.perf_counter() - t0

    timed(steps)  # warm the caches of everything but the step program
    fit_s = (timed(3 * steps) - timed(steps)) / 2

    net = fp.bnn.mlp(jax.random.key(0), 20, 1, hidden=(256, 256))
    m = fp.bnn.model(net)
    xb = rng.normal(size=(16384, 20)).astype(np.float32)
    yb = (xb[:, 0] + 0.1 * rng.normal(size=16384)).astype(np.float32)
    bkw = dict(family="meanfield", epochs=2, batch_size=1024, key=jax.random.key(0), progress=False, chunk=1,
               devices=None if devices == 1 else devices)
    b = fp.bnn.fit(m, xb, yb, **bkw)
    epoch_s = float(np.median([s for n, s in b.timings[1:]]))
    print(json.dumps({"devices": len(jax.devices()), "platform": jax.devices()[0].platform,
                      "fit_steps_per_s": steps / fit_s, "bnn_steps_per_s": (16384 // 1024) / epoch_s}))
"""


def run(devices: int, platform: str, rows: int, steps: int) -> dict:
    env = dict(os.environ)
    if platform == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(WORKER), str(devices), str(rows), str(steps)],
                         env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1,2,4")
    ap.add_argument("--platform", default="cpu", choices=["cpu", "gpu"])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args()
    rows = []
    for n in [int(d) for d in a.devices.split(",")]:
        r = run(n, a.platform, a.rows, a.steps)
        r["requested"] = n
        rows.append(r)
        print(r, flush=True)
    table = Table(title=f"steps per second against devices ({a.platform}; fit: {a.rows} rows x 256 draws)")
    for col in ("devices", "fp.fit steps/s", "speed-up", "fp.bnn steps/s", "speed-up "):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["requested"]), f"{r['fit_steps_per_s']:.1f}",
                      f"{r['fit_steps_per_s'] / rows[0]['fit_steps_per_s']:.2f}x", f"{r['bnn_steps_per_s']:.1f}",
                      f"{r['bnn_steps_per_s'] / rows[0]['bnn_steps_per_s']:.2f}x")
    Console().print(table)
    write_json(RESULTS / f"scaling_{a.platform}.json", {"machine": machine_info(), "rows": a.rows,
                                                         "steps": a.steps, "results": rows})


if __name__ == "__main__":
    main()
