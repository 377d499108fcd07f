"""The UCI protocols end to end: build the network, fit all splits in one vmapped
program, predict, summarise (mean and standard error over splits), write JSON and PNGs.
These are the library calls behind ``flowpost bnn uci`` and ``flowpost bnn classify``.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from ..._checks import out_folder
from ...engine.checkpoint import write_json
from . import predict, uci
from .model import mlp, model
from .train import fit_many


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std() / np.sqrt(len(v)))  # as in the PBP / dropout code


def _save_posteriors(out, chosen, results):
    """Each split's fitted posterior in ``out/posteriors/split_<s>`` (:meth:`BNNResult.save`)."""
    for s, r in zip(chosen, results):
        r.save(out / "posteriors" / f"split_{s}")


def _split_list(name, splits, total):
    if splits is None:
        return list(range(total))
    if isinstance(splits, (int, np.integer)):
        if not 1 <= splits <= total:
            raise ValueError(f"bnn: `splits` must be in [1, {total}] for {name}, got {splits}")
        return list(range(int(splits)))
    splits = [int(s) for s in splits]
    if not splits or min(splits) < 0 or max(splits) >= total:
        raise ValueError(f"bnn: split numbers must lie in [0, {total}) for {name}, got {splits}")
    return splits


def fit_splits(
    name,
    data,
    likelihood,
    n_out,
    hidden,
    family,
    epochs,
    batch_size,
    num_samples,
    learning_rate,
    seed,
    family_options,
    progress,
    prior,
    members,
    devices=None,
):
    """The protocol's network (one hidden layer of ``hidden`` units, ``n_out`` outputs per
    example) and its posteriors on every split of ``data`` (a stacked
    :class:`~flowpost.experiments.bnn.uci.Split`), fitted together: ``(model, results)``.
    What :func:`run_uci` and :func:`run_classification` fit, for a caller that evaluates
    the posteriors its own way (e.g. on a validation part of the training rows)."""
    key = jax.random.key(seed)
    net = mlp(jax.random.fold_in(key, 1), data.x_train.shape[-1], n_out, (hidden,))
    m = model(net, likelihood, prior=prior)
    results = fit_many(
        m,
        data.x_train,
        data.y_train,
        family,
        epochs=epochs,
        batch_size=batch_size,
        num_samples=num_samples,
        learning_rate=learning_rate,
        key=jax.random.fold_in(key, 2),
        family_options=family_options,
        progress=progress,
        label=name,
        members=members,
        devices=devices,
    )
    return m, results


def run_uci(
    dataset: str,
    family: str = "flow",
    *,
    splits=None,
    epochs: int = 400,
    batch_size: int = 32,
    num_samples: int = 4,
    learning_rate: float = 3e-3,
    test_samples: int = 200,
    seed: int = 0,
    hidden: int | None = None,
    prior: float = 1.0,
    family_options: dict | None = None,
    members: int = 1,
    devices: int | None = None,
    likelihood: str = "gaussian",
    progress: bool = True,
    out=None,
) -> dict:
    """The UCI regression protocol on ``dataset`` (one of :data:`uci.REGRESSION`).

    One hidden layer (50 units, 100 for protein), learned Gaussian noise (``likelihood=
    "heteroscedastic"``: a second output predicts each example's noise), N(0, prior^2)
    weights, all ``splits`` (default all) trained together; ``members > 1``: an ensemble of
    that many posteriors per split (:func:`~.train.fit_many`); ``devices``: each
    minibatch split over that many devices. Returns a dict with
    ``dataset``, ``family``, ``rmse_mean``, ``rmse_se``, ``test_ll_mean``, ``test_ll_se``,
    ``splits`` (per split ``split``, ``rmse``, ``test_ll``), ``epochs``, ``seconds``; an
    ensemble adds ``member1_rmse_*`` and ``member1_test_ll_*`` (mean, se and per split):
    its first member alone, i.e. the single fit. With ``out`` also writes
    ``out/results.json``, ``out/predictive.png`` (the first split's predictions and
    interval calibration) and each split's posterior in ``out/posteriors/split_<s>`` (read
    it with :func:`~.train.load`)."""
    if dataset not in uci.REGRESSION:
        raise ValueError(f"bnn.run_uci: `dataset` must be one of {uci.REGRESSION}, got {dataset!r}")
    if likelihood not in ("gaussian", "heteroscedastic"):
        raise ValueError(f"bnn.run_uci: `likelihood` must be 'gaussian' or 'heteroscedastic', got {likelihood!r}")
    chosen = _split_list(dataset, splits, uci.n_splits(dataset))
    out = out_folder("bnn", out)
    data = uci.load_splits(dataset, chosen)
    t0 = time.perf_counter()
    n_out = 2 if likelihood == "heteroscedastic" else 1
    m, results = fit_splits(
        dataset,
        data,
        likelihood,
        n_out,
        hidden or uci.hidden_units(dataset),
        family,
        epochs,
        batch_size,
        num_samples,
        learning_rate,
        seed,
        family_options,
        progress,
        prior,
        members,
        devices=devices,
    )
    seconds = time.perf_counter() - t0
    rows, first = [], None
    y_mean, y_std = np.asarray(data.y_mean), np.asarray(data.y_std)  # one per split (stacked)
    for p, (s, r) in enumerate(zip(chosen, results)):
        key = jax.random.key(1000 + s)
        pr = predict.regression(m, r.sample(key, test_samples), data.x_test[p], data.y_test[p], y_mean[p], y_std[p])
        first = first or (pr, data.y_test[p])
        rows.append({"split": s, "rmse": pr["rmse"], "test_ll": pr["test_ll"], "message": r.message})
        if members > 1:  # what the ensemble adds: its first member is the single fit
            pr1 = predict.regression(
                m, r.q.components[0].sample(key, test_samples), data.x_test[p], data.y_test[p], y_mean[p], y_std[p]
            )
            rows[-1].update(member1_rmse=pr1["rmse"], member1_test_ll=pr1["test_ll"])
    out_dict = {
        "dataset": dataset,
        "family": family,
        "members": members,
        "likelihood": likelihood,
        "epochs": epochs,
        "batch_size": batch_size,
        "num_samples": num_samples,
        "learning_rate": learning_rate,
        "n_params": m.dim,
        "seconds": seconds,
        "splits": rows,
    }
    out_dict["rmse_mean"], out_dict["rmse_se"] = _mean_se([r["rmse"] for r in rows])
    out_dict["test_ll_mean"], out_dict["test_ll_se"] = _mean_se([r["test_ll"] for r in rows])
    if members > 1:
        for k in ("rmse", "test_ll"):
            out_dict[f"member1_{k}_mean"], out_dict[f"member1_{k}_se"] = _mean_se([r[f"member1_{k}"] for r in rows])
    if out is not None:
        write_json(out / "results.json", out_dict)
        _save_posteriors(out, chosen, results)
        assert first is not None  # at least one split was fitted
        pr, y = first
        predict.regression_plot(
            pr["mean"], pr["sd"], y, out / "predictive.png", title=f"{dataset}, split {chosen[0]} ({family})"
        )
    return out_dict


def run_classification(
    dataset: str,
    family: str = "flow",
    *,
    splits=5,
    epochs: int = 200,
    batch_size: int = 32,
    num_samples: int = 4,
    learning_rate: float = 3e-3,
    test_samples: int = 200,
    seed: int = 0,
    hidden: int = 50,
    prior: float = 1.0,
    family_options: dict | None = None,
    members: int = 1,
    devices: int | None = None,
    progress: bool = True,
    out=None,
) -> dict:
    """A one-hidden-layer Bernoulli BNN on a classification set (:data:`uci.CLASSIFICATION`),
    90/10 splits by the UCI rule. Returns ``accuracy_mean/_se``, ``test_ll_mean/_se``,
    ``ece_mean/_se`` and per-split rows; with ``out``: ``results.json``,
    ``reliability.png`` (all splits' test predictions pooled) and ``posteriors/split_<s>``;
    ``devices``: each minibatch split over that many devices."""
    if dataset not in uci.CLASSIFICATION:
        raise ValueError(f"bnn.run_classification: `dataset` must be one of {uci.CLASSIFICATION}, got {dataset!r}")
    chosen = _split_list(dataset, splits, 20)
    out = out_folder("bnn", out)
    data = uci.load_splits(dataset, chosen)
    t0 = time.perf_counter()
    m, results = fit_splits(
        dataset,
        data,
        "bernoulli",
        1,
        hidden,
        family,
        epochs,
        batch_size,
        num_samples,
        learning_rate,
        seed,
        family_options,
        progress,
        prior,
        members,
        devices=devices,
    )
    seconds = time.perf_counter() - t0
    rows, all_p, all_y = [], [], []
    for p, (s, r) in enumerate(zip(chosen, results)):
        pr = predict.classification(m, r.sample(jax.random.key(1000 + s), test_samples), data.x_test[p], data.y_test[p])
        all_p.append(pr["probs"])
        all_y.append(data.y_test[p])
        rows.append({"split": s, **{k: pr[k] for k in ("accuracy", "test_ll", "ece")}, "message": r.message})
    out_dict = {
        "dataset": dataset,
        "family": family,
        "members": members,
        "epochs": epochs,
        "seconds": seconds,
        "splits": rows,
    }
    for k in ("accuracy", "test_ll", "ece"):
        out_dict[f"{k}_mean"], out_dict[f"{k}_se"] = _mean_se([r[k] for r in rows])
    if out is not None:
        write_json(out / "results.json", out_dict)
        _save_posteriors(out, chosen, results)
        predict.reliability_plot(
            np.concatenate(all_p), np.concatenate(all_y), out / "reliability.png", title=f"{dataset} ({family})"
        )
    return out_dict
