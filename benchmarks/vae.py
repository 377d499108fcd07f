"""Flow-VAEs on static binarized MNIST: every posterior flow, the same encoder/decoder
and budget; test -ELBO and NLL beside the published numbers; seconds per epoch; and
flowpost vs PyTorch epoch time for the same planar-flow VAE, in the same run.

Published (van den Berg et al. 2018, Sylvester flows, table 1: gated convolutional
encoder/decoder, latent 64, up to 2000 epochs, KL warm-up over 100, batch 100, Adam 5e-4;
-ELBO in nats): no flow 86.55, planar 86.06, IAF 84.20, Sylvester (orthogonal) 83.32.

    python benchmarks/vae.py                         # CPU budget: MLP, --epochs 10
    python benchmarks/vae.py --epochs 1 --quick      # timing only (small test subsets)
    python benchmarks/vae.py --arch gated --epochs 2000 --warmup 100 --nll-images 10000   # the full protocol (GPU)

Every run's folder (checkpoints, PNGs, history) is kept under ``--runs``; the table is
also written to ``benchmarks/results/vae.json``. Nothing here assumes a CPU: on a GPU
JAX uses it (and the PyTorch peer is timed on the same device when it can use it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from _common import machine_info, write_json  # noqa: E402

import flowpost as fp  # noqa: E402
from flowpost.experiments.vae.train import epoch_runner  # noqa: E402

PUBLISHED = {"none": 86.55, "planar": 86.06, "iaf": 84.20, "sylvester-o": 83.32}


def train_flow(flow, args, data):
    cfg = fp.vae.TrainConfig(model=fp.vae.VAEConfig(flow=flow, arch=args.arch, latent=args.latent),
                             epochs=args.epochs, warmup=args.warmup, patience=args.patience, seed=args.seed,
                             limit=args.limit)
    out = Path(args.runs) / f"{args.arch}-{flow}"
    t0 = time.perf_counter()
    result = fp.vae.train(cfg, out=out, data=data, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    key = jax.random.key(args.seed + 1)
    test = data.test
    elbo = fp.vae.evaluate.elbo(result.model, test, key)
    # NLL on evenly spaced test images (the test file's order is not random: its first
    # images are harder than average); the -ELBO is reported on the same subset too
    idx = np.unique(np.linspace(0, len(test) - 1, min(args.nll_images, len(test))).astype(int))
    t0 = time.perf_counter()
    ll = fp.vae.log_likelihood(result.model, test[idx], jax.random.fold_in(key, 1),
                               samples=args.nll_samples, chunk=min(500, args.nll_samples),
                               progress=not args.no_progress)
    return {"flow": flow, "arch": args.arch, "epochs": result.epochs_done, "best_epoch": result.best_epoch,
            "valid_neg_elbo": result.best_valid, "test_neg_elbo": float(-np.mean(elbo)),
            "subset_neg_elbo": float(-np.mean(elbo[idx])), "test_nll": float(-np.mean(ll)),
            "nll_images": int(len(ll)), "nll_samples": args.nll_samples, "nll_seconds": time.perf_counter() - t0,
            "seconds_per_epoch": seconds_per_epoch(result), "compile_seconds": result.compile_seconds,
            "train_wall_seconds": wall, "published_neg_elbo": PUBLISHED.get(flow), "message": result.message}


def seconds_per_epoch(result):
    """Median epoch time without compilation; from the run's history if this call resumed
    a finished run (benchmark re-runs reuse the runs under --runs)."""
    if result.history and not any(h.get("this_call") for h in result.history):
        s = [h["seconds"] for h in result.history]
        return float(np.median(s[1:] if len(s) > 1 else s))
    return result.seconds_per_epoch


def epoch_fn(config, data):
    """``(state, one)``: an engine state of ``config``'s VAE and ``one(state) -> (state, loss)``,
    one jitted epoch of fp.vae's training (ELBO, KL weight 1, Adam 5e-4, batch 100)."""
    import equinox as eqx
    import optax

    model = fp.vae.make_vae(config.model, jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(5e-4)
    plain, _ = epoch_runner(static, "elbo", 1, 100, len(data.train), 0, opt)
    x = jnp.asarray(data.train)

    def one(state):
        state, info = plain(state, 1, x)
        return state, float(info.loss[-1])

    return fp.engine.init(params, opt, jax.random.key(1)), one


def time_epochs(config, data, epochs):
    """Median seconds of ``epochs`` epochs of fp.vae's jitted epoch (after a compiling one)."""
    state, epoch = epoch_fn(config, data)

    def one(state):
        return epoch(state)[0]

    t0 = time.perf_counter()
    state = one(state)
    first = time.perf_counter() - t0
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        state = one(state)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), first - statistics.median(times)


def torch_comparison(data, repeats, threads):
    """flowpost vs PyTorch, planar-flow MLP VAE, epochs timed alternately in this process."""
    import torch

    import vae_torch

    device = "cuda" if (torch.cuda.is_available() and jax.default_backend() == "gpu") else "cpu"
    cfg = fp.vae.TrainConfig(model=fp.vae.VAEConfig(flow="planar", arch="mlp"))
    state, epoch = epoch_fn(cfg, data)
    tm, opt = vae_torch.make(threads=threads)
    tm = tm.to(device)
    tx = torch.from_numpy(np.asarray(data.train)).to(device)
    gen = torch.Generator().manual_seed(0)

    def jax_epoch():
        nonlocal state
        state, loss = epoch(state)
        return loss

    def torch_epoch():
        loss = vae_torch.epoch(tm, opt, tx, 1.0, 100, gen)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    jax_epoch(), torch_epoch()  # compile / warm up
    tj, tt, lj, lt = [], [], [], []
    for r in range(repeats):
        for name in (("jax", "torch") if r % 2 == 0 else ("torch", "jax")):
            t0 = time.perf_counter()
            loss = jax_epoch() if name == "jax" else torch_epoch()
            (tj if name == "jax" else tt).append(time.perf_counter() - t0)
            (lj if name == "jax" else lt).append(loss)
    return {"flow": "planar", "arch": "mlp", "images_per_epoch": int(len(data.train)), "device": device,
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "flowpost_seconds_per_epoch": statistics.median(tj), "torch_seconds_per_epoch": statistics.median(tt),
            "speedup": statistics.median(tt) / statistics.median(tj),
            "flowpost_last_loss": lj[-1], "torch_last_loss": lt[-1], "repeats": repeats}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flows", nargs="+", choices=fp.vae.FLOWS,
                   default=["none", "planar", "iaf", "spline", "sylvester-t", "sylvester-h", "sylvester-o"])
    p.add_argument("--arch", default="mlp", choices=fp.vae.ARCHS)
    p.add_argument("--epochs", type=int, default=10, help="epochs per flow (the paper: up to 2000)")
    p.add_argument("--warmup", type=int, default=None, help="KL warm-up epochs (default: epochs // 5, at most 100)")
    p.add_argument("--patience", type=int, default=100)
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="first LIMIT images of each split")
    p.add_argument("--nll-samples", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--nll-images", type=int, default=10000, help="test images for the NLL (the -ELBO uses all)")
    p.add_argument("--quick", action="store_true", help="timing run: NLL with 100 samples on 500 images")
    p.add_argument("--gated-timing-images", type=int, default=50000,
                   help="training images for the gated-architecture epoch timing (0: skip)")
    p.add_argument("--torch", dest="torch", action="store_true", default=True)
    p.add_argument("--no-torch", dest="torch", action="store_false")
    p.add_argument("--torch-repeats", type=int, default=3)
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/benchmark-vae", help="folder for the training runs")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "vae.json"))
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = min(100, max(1, args.epochs // 5))
    if args.quick:
        args.nll_samples, args.nll_images = 100, 500

    data = fp.vae.load_data("mnist", limit=args.limit)
    payload = {"machine": machine_info(), "args": vars(args), "rows": [], "gated_timing": {}, "torch": None,
               "published": PUBLISHED}
    save = lambda: write_json(Path(args.out), payload)  # noqa: E731  (after every step: a kill loses little)

    if args.torch:
        payload["torch"] = t = torch_comparison(data, args.torch_repeats, args.torch_threads)
        print(f"planar MLP VAE epoch: flowpost {t['flowpost_seconds_per_epoch']:.2f} s, PyTorch "
              f"{t['torch_seconds_per_epoch']:.2f} s -> flowpost {t['speedup']:.2f}x faster", flush=True)
        save()
    if args.gated_timing_images:
        sub = fp.vae.ImageData("mnist", data.train[: args.gated_timing_images], data.valid, data.test, (28, 28), True)
        cfg = fp.vae.TrainConfig(model=fp.vae.VAEConfig(flow="none", arch="gated", latent=args.latent))
        sec, comp = time_epochs(cfg, sub, epochs=1)
        payload["gated_timing"]["gated-none"] = {"images": len(sub.train), "seconds": sec, "compile_seconds": comp,
                                                 "seconds_per_full_epoch": sec * 50000 / len(sub.train)}
        print(f"gated none: {sec:.1f} s for {len(sub.train)} images "
              f"(-> {sec * 50000 / len(sub.train):.1f} s per 50000-image epoch)", flush=True)
        save()
    rows = payload["rows"]
    for flow in args.flows:
        rows.append(train_flow(flow, args, data))
        r = rows[-1]
        print(f"{flow:12s} test -ELBO {r['test_neg_elbo']:7.2f}  NLL {r['test_nll']:7.2f}  "
              f"{r['seconds_per_epoch']:6.2f} s/epoch  (published -ELBO {r['published_neg_elbo']})", flush=True)
        save()

    print(f"\n| posterior flow | epochs | test -ELBO | -ELBO / NLL on {rows[0]['nll_images'] if rows else 0} images "
          f"| published -ELBO | s / epoch |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        pub = "" if r["published_neg_elbo"] is None else f"{r['published_neg_elbo']:.2f}"
        print(f"| {r['flow']} | {r['epochs']} | {r['test_neg_elbo']:.2f} | {r['subset_neg_elbo']:.2f} / "
              f"{r['test_nll']:.2f} | {pub} | {r['seconds_per_epoch']:.2f} |")
    none = next((r for r in rows if r["flow"] == "none"), None)
    if none:
        beat = [r["flow"] for r in rows if r["flow"] != "none" and r["test_neg_elbo"] < none["test_neg_elbo"]]
        print(f"flows with a lower test -ELBO than no flow: {beat or 'none'}")
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
