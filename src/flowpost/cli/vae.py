"""``flowpost vae train|eval``: flow-VAEs on static binarized MNIST or Frey faces.

Each command is one library call: :func:`flowpost.vae.train` and
:func:`flowpost.vae.evaluate_run`.
"""

from __future__ import annotations

import math
import pathlib
from typing import Optional

import typer

from . import _ui

app = typer.Typer(
    help="VAEs whose encoder posterior is a normalizing flow (MNIST, Frey faces).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def train(
    flow: str = typer.Option("none", help="none | planar | iaf | sylvester-o | sylvester-h | sylvester-t | spline"),
    dataset: str = typer.Option("mnist", help="mnist (static binarized) | freyfaces"),
    epochs: int = typer.Option(2000, help="maximum epochs (the Sylvester-flow protocol: 2000)"),
    arch: str = typer.Option("mlp", help="mlp | gated (the gated convolutional nets of van den Berg et al. 2018)"),
    objective: str = typer.Option("elbo", help="elbo (with KL warm-up) | iwae"),
    k: int = typer.Option(1, help="importance samples of the IWAE bound (objective iwae)"),
    latent: int = typer.Option(64, help="latent dimension"),
    batch_size: int = typer.Option(100, help="minibatch size"),
    learning_rate: float = typer.Option(5e-4, help="Adam learning rate"),
    warmup: int = typer.Option(100, help="epochs of KL warm-up (0: none)"),
    patience: int = typer.Option(100, help="early stopping: epochs without validation improvement"),
    seed: int = typer.Option(0, help="PRNG seed"),
    limit: Optional[int] = typer.Option(None, help="use only LIMIT images of each split, spread over it (quick runs)"),
    devices: Optional[int] = typer.Option(None, help="split each minibatch over N devices (default: one)"),
    out: pathlib.Path = typer.Option(pathlib.Path("runs/vae"), help="run folder; resumed if it has a checkpoint"),
):
    """Train a flow-VAE; writes checkpoints every epoch, history.json, summary.json and PNGs to OUT.

    Re-running with the same OUT resumes the run where it stopped (Ctrl-C is safe)."""
    from .._checks import USER_ERRORS
    from ..experiments import vae

    likelihood = "bernoulli" if dataset == "mnist" else "logistic"
    shape = (28, 28) if dataset == "mnist" else (28, 20)
    try:
        model = vae.VAEConfig(flow=flow, arch=arch, latent=latent, image_shape=shape, likelihood=likelihood)
        config = vae.TrainConfig(
            model=model,
            dataset=dataset,
            objective=objective,
            k=k,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup=warmup,
            patience=patience,
            seed=seed,
            limit=limit,
        )
        result = vae.train(config, out=out, devices=devices)
    except USER_ERRORS as e:
        _ui.error(e)
        raise typer.Exit(2) from None
    best = "-" if not math.isfinite(result.best_valid) else f"{result.best_valid:.2f}"
    row = (
        str(result.epochs_done),
        str(result.best_epoch),
        best,
        f"{result.seconds_per_epoch:.2f}",
        f"{result.compile_seconds:.1f}" if math.isfinite(result.compile_seconds) else "-",
    )
    _ui.table(
        f"{flow} VAE on {dataset} ({arch}, {objective})",
        ("epochs", "best epoch", "best valid -ELBO", "s / epoch", "compile s"),
        [row],
        left=(),
    )
    _ui.say(result.message)
    if result.status == "nonfinite":  # the last good checkpoint is kept; the command failed
        _ui.error(
            f"the run diverged; {out} keeps the checkpoint of epoch {result.epochs_done}. Re-run the same "
            "command with a smaller --learning-rate to resume from it, or inspect history.json."
        )
        raise typer.Exit(1)
    _ui.say(
        f"wrote {out}/checkpoint.eqx, best.eqx, history.json, summary.json, samples.png, "
        f"reconstructions.png; next: flowpost vae eval {out}"
    )
    if result.status == "interrupted":
        raise typer.Exit(130)


@app.command("eval")
def eval_(
    run: pathlib.Path = typer.Argument(..., help="a `flowpost vae train` output folder"),
    samples: int = typer.Option(5000, help="importance samples per test image for the NLL"),
    limit: Optional[int] = typer.Option(None, help="evaluate only LIMIT test images, spread over the test set"),
    seed: int = typer.Option(1, help="PRNG seed"),
):
    """Test -ELBO and NLL (importance sampling) in nats per image; writes RUN/eval.json."""
    import jax

    from .._checks import USER_ERRORS
    from ..experiments import vae

    try:
        r = vae.evaluate_run(run, samples=samples, key=jax.random.key(seed), limit=limit, progress=True)
    except USER_ERRORS as e:
        _ui.error(e)
        raise typer.Exit(2) from None
    _ui.table(
        f"{r['flow']} VAE, {r['dataset']} test set ({r['n_images']} images)",
        ("-ELBO (nats)", f"NLL (nats, {samples} samples)"),
        [(f"{r['neg_elbo']:.2f}", f"{r['nll']:.2f}")],
        left=(),
    )
    _ui.say(f"wrote {run}/eval.json")
