"""``flowpost bnn``: Bayesian neural networks on the UCI benchmarks (thin: each command is
one call of :func:`flowpost.experiments.bnn.run_uci` / :func:`run_classification`)."""

from __future__ import annotations

import pathlib
from typing import Optional

import typer

from . import _ui

app = typer.Typer(
    help="Bayesian neural networks with flow posteriors over the weights.", no_args_is_help=True, add_completion=False
)


def _splits(value: Optional[str]):
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--splits takes a count (e.g. 5) or a list (e.g. 0,3,7), got {value!r}") from None
    return parts[0] if len(parts) == 1 else parts


def _table(title, res, metrics):
    rows = [[str(row["split"])] + [f"{row[m]:.4g}" for m in metrics] for row in res["splits"]]
    rows.append(["mean ± se"] + [f"{res[m + '_mean']:.4g} ± {res[m + '_se']:.2g}" for m in metrics])
    _ui.table(title, ("split", *metrics), rows, left=(), bold_last=True)


def _label(family, members):
    return family if members == 1 else f"ensemble of {members} {family}"


def _run(fn, title, metrics, files, **kwargs):
    """One library call; its errors become a red message and exit code 2; then the table."""
    from .._checks import USER_ERRORS

    try:
        res = fn(**kwargs)
    except USER_ERRORS as e:
        _ui.error(e)
        raise typer.Exit(2) from None
    _table(f"{title}, {res['seconds']:.1f} s", res, metrics)
    if kwargs.get("out") is not None:
        _ui.say(f"wrote {kwargs['out']}/results.json, {files}")


@app.command()
def uci(
    dataset: str = typer.Option(
        ...,
        help="bostonHousing | concrete | energy | kin8nm | naval-propulsion-plant | "
        "power-plant | protein-tertiary-structure | wine-quality-red | yacht",
    ),
    family: str = typer.Option("subspace", help="meanfield | lowrank | flow | subspace | blockflow"),
    splits: Optional[str] = typer.Option(None, help="number of splits (first N) or a comma list; default all"),
    epochs: int = typer.Option(400, help="passes over the training data"),
    batch_size: int = typer.Option(32, help="examples per step"),
    num_samples: int = typer.Option(4, help="weight draws per step"),
    learning_rate: float = typer.Option(3e-3, help="peak Adam learning rate"),
    members: int = typer.Option(1, help="ensemble size: posteriors fitted per split, predicting as their mixture"),
    likelihood: str = typer.Option(
        "gaussian", help="gaussian (learned noise) | heteroscedastic (the network predicts each example's noise)"
    ),
    seed: int = typer.Option(0, help="PRNG seed"),
    devices: Optional[int] = typer.Option(None, help="split each minibatch over N devices (default: one)"),
    out: Optional[pathlib.Path] = typer.Option(None, help="folder for results.json and predictive.png"),
):
    """The UCI regression benchmark: test RMSE and log-likelihood over the standard splits."""
    from ..experiments import bnn

    _run(
        bnn.run_uci,
        f"{dataset}: {_label(family, members)}, {epochs} epochs",
        ("rmse", "test_ll"),
        "predictive.png",
        dataset=dataset,
        family=family,
        splits=_splits(splits),
        epochs=epochs,
        batch_size=batch_size,
        num_samples=num_samples,
        learning_rate=learning_rate,
        seed=seed,
        members=members,
        likelihood=likelihood,
        devices=devices,
        out=out,
    )


@app.command()
def classify(
    dataset: str = typer.Option(..., help="german | ionosphere | sonar | australian"),
    family: str = typer.Option("subspace", help="meanfield | lowrank | flow | subspace | blockflow"),
    splits: Optional[str] = typer.Option("5", help="number of splits (first N) or a comma list"),
    epochs: int = typer.Option(200, help="passes over the training data"),
    batch_size: int = typer.Option(32, help="examples per step"),
    learning_rate: float = typer.Option(3e-3, help="peak Adam learning rate"),
    members: int = typer.Option(1, help="ensemble size: posteriors fitted per split, predicting as their mixture"),
    seed: int = typer.Option(0, help="PRNG seed"),
    devices: Optional[int] = typer.Option(None, help="split each minibatch over N devices (default: one)"),
    out: Optional[pathlib.Path] = typer.Option(None, help="folder for results.json and reliability.png"),
):
    """Binary classification (one hidden layer of 50): test accuracy, log-likelihood, ECE."""
    from ..experiments import bnn

    _run(
        bnn.run_classification,
        f"{dataset}: {_label(family, members)}, {epochs} epochs",
        ("accuracy", "test_ll", "ece"),
        "reliability.png",
        dataset=dataset,
        family=family,
        splits=_splits(splits),
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        members=members,
        devices=devices,
        out=out,
    )
