"""Choose the noise model per UCI split on validation data, as the MC-dropout re-run chose
its hyper-parameters: inside every train/test split, fit `subspace` with homoscedastic and
with heteroscedastic Gaussian noise to 80% of the training rows and keep, for that split,
the noise model with the higher log-likelihood on the other 20%. The test figures are
those of the chosen model fitted to the whole training split, read from the two tables
(`results/uci.json`, homoscedastic; `results/uci_heteroscedastic.json`, its single-fit
column), which used the same budget, keys and splits; no test data enter the choice.

Usage:
    python benchmarks/uci_select.py            # all nine sets, all splits
Writes benchmarks/results/uci_select.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from _common import machine_info, write_json
from rich.console import Console
from rich.table import Table
from uci import DROPOUT_2018, PBP, SHORT, budget

from flowpost.experiments.bnn import experiment, predict, uci

RESULTS = Path(__file__).parent / "results"
LIKELIHOODS = ("gaussian", "heteroscedastic")


def validation_ll(name: str, likelihood: str, steps: int, large_epochs: int, seed: int = 0) -> np.ndarray:
    """Per split: `subspace` fitted to the first 80% of the (already shuffled, standardised)
    training rows by run_uci's own fitting call (same network, keys and budget), its mean
    log predictive density on the other 20% (standardised units)."""
    data = uci.load_splits(name)
    cut = int(round(0.8 * data.x_train.shape[1]))
    epochs, batch, draws = budget(name, steps, large_epochs)
    part = data._replace(x_train=data.x_train[:, :cut], y_train=data.y_train[:, :cut])
    model, res = experiment.fit_splits(f"{name} {likelihood} (validation)", part, likelihood,
                                       2 if likelihood == "heteroscedastic" else 1, uci.hidden_units(name), "subspace",
                                       epochs, min(batch, cut), draws, 3e-3, seed, None, True, 1.0, 1)
    return np.array([predict.regression(model, r.sample(jax.random.key(1000 + p), 200), data.x_train[p, cut:],
                                        data.y_train[p, cut:])["test_ll"] for p, r in enumerate(res)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=",".join(uci.REGRESSION))
    ap.add_argument("--out", default=str(RESULTS / "uci_select.json"))
    args = ap.parse_args()
    homo = json.loads((RESULTS / "uci.json").read_text())
    hetero = json.loads((RESULTS / "uci_heteroscedastic.json").read_text())
    steps, large = homo["steps_per_split"], homo["large_epochs"]
    if (hetero["steps_per_split"], hetero["large_epochs"]) != (steps, large):
        raise SystemExit("uci_select: the two tables were run with different budgets")
    console, rows, t0 = Console(), {}, time.perf_counter()
    for name in args.datasets.split(","):
        val = {lik: validation_ll(name, lik, steps, large) for lik in LIKELIHOODS}
        test = {"gaussian": [s["test_ll"] for s in homo["results"][name]["subspace"]["splits"]],
                "heteroscedastic": [s["member1_test_ll"] for s in hetero["results"][name]["subspacex3"]["splits"]]}
        chosen = np.where(val["heteroscedastic"] > val["gaussian"], "heteroscedastic", "gaussian")
        ll = np.array([test[c][p] for p, c in enumerate(chosen)])
        rows[name] = {"validation_ll": {k: v.tolist() for k, v in val.items()}, "chosen": chosen.tolist(),
                      "test_ll": ll.tolist(), "test_ll_mean": float(ll.mean()),
                      "test_ll_se": float(ll.std() / np.sqrt(len(ll)))}
        console.print(f"{name}: heteroscedastic chosen on {int(np.sum(chosen == 'heteroscedastic'))}/{len(chosen)} "
                      f"splits; test LL {ll.mean():.3f} ± {ll.std() / np.sqrt(len(ll)):.3f}")
        wins = {"beats_dropout_ll": sum(r["test_ll_mean"] > DROPOUT_2018[n][2] for n, r in rows.items()),
                "beats_pbp_ll": sum(r["test_ll_mean"] > PBP[n][2] for n, r in rows.items()), "datasets": len(rows)}
        write_json(Path(args.out), {"machine": machine_info(), "seconds": time.perf_counter() - t0, "results": rows,
                                    "wins": wins})
    table = Table(title="test log-likelihood, noise model chosen per split on validation data (subspace)")
    for col in ("dataset", "PBP", "MC dropout (2018)", "chosen", "heteroscedastic splits"):
        table.add_column(col, justify="left" if col == "dataset" else "right")
    for n, r in rows.items():
        table.add_row(SHORT.get(n, n), f"{PBP[n][2]:.2f}", f"{DROPOUT_2018[n][2]:.2f}",
                      f"{r['test_ll_mean']:.3f} ± {r['test_ll_se']:.3f}",
                      f"{r['chosen'].count('heteroscedastic')}/{len(r['chosen'])}")
    console.print(table)
    console.print(f"above MC dropout on {wins['beats_dropout_ll']}/{wins['datasets']}, "
                  f"above PBP on {wins['beats_pbp_ll']}/{wins['datasets']}")


if __name__ == "__main__":
    main()
