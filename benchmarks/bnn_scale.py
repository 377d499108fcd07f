"""Scaling Bayesian neural networks: what each variational family costs as the network
grows, and a >100,000-weight network on binarized MNIST.

Part 1 (cost vs size): the network 392 -> H -> 392 (Bernoulli pixels) with H = 1, 12,
128, 1274 (1.2k, 9.8k, 101k, 1.0M weights). Per family: trainable numbers, compiled
memory of one training step (XLA's memory analysis: arguments + temporaries), and time
per step (batch 100, 4 weight draws, median of repeats).

Part 2 (MNIST): the static binarized MNIST (50,000 train / 10,000 test; no labels in
this data set, so the task is image completion): predict the bottom half of each image
(392 Bernoulli pixels) from its top half with a 392-128-392 MLP, 100,872 weights,
N(0, 1) prior. Mean-field against the scalable flow family (layer-wise block flows) and
the low-rank Gaussian: seconds per epoch (steady state, compile excluded), peak memory,
test log-likelihood of the bottom half (nats per image, 100 weight draws) and pixel
accuracy of the predictive mean.

Usage:  python benchmarks/bnn_scale.py [--epochs 5] [--sizes 1,12,128,1274]
Writes benchmarks/results/bnn_scale.json. Runs unchanged on a GPU.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import machine_info, write_json
from rich.console import Console
from rich.table import Table

import flowpost as fp
from flowpost.experiments.bnn import families, predict
from flowpost.vi import objectives
from flowpost.vi.fit import FitState, default_optimizer, flat_params, make_step


def mnist():
    d = np.load(fp.data.path("mnist/binarized_mnist.npz"))
    tr, te = d["train"].astype(np.float32), d["test"].astype(np.float32)
    return tr[:, :392], tr[:, 392:], te[:, :392], te[:, 392:]


def step_cost(model, family, x, y, n_total, num_samples=4, repeats=5):
    """(trainable numbers, compiled bytes, seconds per step) of one training step."""
    q = families.make(family, model, key=jax.random.key(0))
    params, build = flat_params(q)
    opt = default_optimizer(1000, 1e-3)
    state = FitState.init(params, opt, jax.random.key(1))
    # as fp.bnn.fit runs it: unguarded (the engine re-runs a chunk guarded only when it failed)
    step = make_step(build, objectives.get("elbo"), fp.bnn.minibatch_log_joint(model, x, y, n_total), opt, num_samples)
    fn = jax.jit(lambda s: step(s, None)[0])
    compiled = fn.lower(state).compile()
    mem = compiled.memory_analysis()
    nbytes = None if mem is None else int(mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes)
    state = jax.block_until_ready(fn(state))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(fn(state))
        times.append(time.perf_counter() - t0)
    return families.n_params(q), nbytes, statistics.median(times)


def peak_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process max RSS (CPU)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,12,128,1274", help="hidden widths H of 392-H-392")
    ap.add_argument("--families", default="meanfield,lowrank,subspace,blockflow,flow")
    ap.add_argument("--flow-max-weights", type=int, default=20000, help="the dense flow only up to this size")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--mnist-families", default="meanfield,blockflow,lowrank")
    ap.add_argument("--learning-rate", type=float, default=3e-3)
    ap.add_argument("--skip-cost", action="store_true", help="keep part 1's rows from an existing --out file")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bnn_scale.json"))
    args = ap.parse_args()
    console = Console()
    xtr, ytr, xte, yte = mnist()
    xb, yb = jnp.asarray(xtr[:100]), jnp.asarray(ytr[:100])
    payload = {"machine": machine_info(), "cost": [], "mnist": []}

    table = Table(title="cost of one training step (batch 100, 4 draws)")
    for c in ("weights", "family", "trainable", "compiled MB", "ms / step"):
        table.add_column(c, justify="right")
    if args.skip_cost:
        import json

        payload["cost"] = json.loads(Path(args.out).read_text())["cost"]
    for h in ([] if args.skip_cost else (int(v) for v in args.sizes.split(","))):
        model = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 392, 392, hidden=(h,)), "bernoulli")
        for fam in args.families.split(","):
            if fam == "flow" and model.n_weights > args.flow_max_weights:
                continue
            n, nbytes, sec = step_cost(model, fam, xb, yb, len(xtr))
            row = {"hidden": h, "weights": model.n_weights, "family": fam, "trainable": n, "compiled_bytes": nbytes,
                   "seconds_per_step": sec}
            payload["cost"].append(row)
            table.add_row(f"{model.n_weights:,}", fam, f"{n:,}", "-" if nbytes is None else f"{nbytes / 2**20:.1f}",
                          f"{1000 * sec:.2f}")
            console.print(f"{model.n_weights:>9,} {fam:>10}: {n:>10,} numbers, "
                          f"{(nbytes or 0) / 2**20:8.1f} MB, {1000 * sec:8.2f} ms/step")
            write_json(Path(args.out), payload)
    if not args.skip_cost:
        console.print(table)

    model = fp.bnn.model(fp.bnn.mlp(jax.random.key(0), 392, 392, hidden=(128,)), "bernoulli")
    mtable = Table(title=f"binarized MNIST, bottom half from top half: 392-128-392 ({model.n_weights:,} weights), "
                         f"{args.epochs} epochs")
    for c in ("family", "s / epoch", "compile+1st epoch s", "peak MB", "test LL (nats/image)", "pixel acc"):
        mtable.add_column(c, justify="right")
    for fam in args.mnist_families.split(","):
        res = fp.bnn.fit(model, xtr, ytr, fam, epochs=args.epochs, batch_size=100, num_samples=4, learning_rate=args.learning_rate,
                         key=jax.random.key(0), chunk=1, label="mnist")
        steady = [s / m for m, s in res.timings[1:]] or [res.timings[0][1] / res.timings[0][0]]
        thetas = res.sample(jax.random.key(1), 100)
        ll, acc = [], []
        for i in range(0, len(xte), 500):
            ll.append(predict.log_predictive(model, thetas, xte[i:i + 500], yte[i:i + 500]))
            p = jax.nn.sigmoid(model.outputs(thetas, jnp.asarray(xte[i:i + 500]))).mean(0)
            acc.append(np.asarray((p > 0.5) == (yte[i:i + 500] > 0.5)).mean(1))
        peak, how = peak_bytes()
        row = {"family": fam, "weights": model.n_weights, "trainable": families.n_params(res.q), "epochs": args.epochs,
               "seconds_per_epoch": statistics.median(steady), "first_call_seconds": res.timings[0][1],
               "peak_bytes": peak, "peak_bytes_how": how, "test_ll_per_image": float(np.concatenate(ll).mean()),
               "pixel_accuracy": float(np.concatenate(acc).mean()), "final_elbo": float(res.trace.elbo[-1]),
               "message": res.message}
        payload["mnist"].append(row)
        write_json(Path(args.out), payload)
        mtable.add_row(fam, f"{row['seconds_per_epoch']:.1f}", f"{row['first_call_seconds']:.1f}",
                       f"{peak / 2**20:.0f}", f"{row['test_ll_per_image']:.2f}", f"{row['pixel_accuracy']:.4f}")
    console.print(mtable)
    console.print("peak memory: " + payload["mnist"][-1]["peak_bytes_how"] + " (cumulative over the process on CPU)")


if __name__ == "__main__":
    main()
