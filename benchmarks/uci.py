"""UCI regression benchmark for Bayesian neural networks: flowpost's families beside the
published PBP and MC-dropout numbers.

Protocol (Hernandez-Lobato & Adams 2015): the standard splits (20; protein 5), one hidden
layer of 50 ReLU units (100 for protein), standardised data, learned Gaussian noise with a
weak Gamma(1, 0.01) prior on its precision, N(0, 1) weights; test RMSE and test
log-likelihood in original units, mean ± standard error over the splits. All splits of a
data set train together in one vmapped, jitted program (`fp.bnn.run_uci`).

Published numbers (same splits):
- PBP: Hernandez-Lobato & Adams (2015), "Probabilistic backpropagation for scalable
  learning of Bayesian neural networks", ICML, Table 2 (test RMSE) and Table 3 (test LL);
  reproduced in Gal & Ghahramani (2016), Table 1.
- MC dropout: the 2018 corrected re-run ("Grid Search (new)" columns: hyper-parameters tuned
  on a fresh 80/20 train/validation split inside every train/test split, 10x the paper's
  epochs) in the authors' repository, github.com/yaringal/DropoutUncertaintyExps, readme.md
  (commit 6eb4497).

Usage:
    python benchmarks/uci.py                       # CPU budget: 6000 full-batch steps / 400 epochs
    python benchmarks/uci.py --epochs 400          # the protocol's epochs (GPU)
    python benchmarks/uci.py --datasets yacht,energy --families meanfield,subspace
    python benchmarks/uci.py --families subspacex5 --out benchmarks/results/uci_ensemble.json
Writes benchmarks/results/uci.json (or --out). ``FAMILYxK``: an ensemble of K posteriors of
FAMILY per split (``fp.bnn.run_uci(members=K)``), predicting as their equal-weight mixture.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import machine_info, write_json
from rich.console import Console
from rich.table import Table

import flowpost as fp
from flowpost.experiments.bnn import uci

# (rmse, rmse_se, ll, ll_se)
PBP = {
    "bostonHousing": (3.01, 0.18, -2.57, 0.09),
    "concrete": (5.67, 0.09, -3.16, 0.02),
    "energy": (1.80, 0.05, -2.04, 0.02),
    "kin8nm": (0.10, 0.00, 0.90, 0.01),
    "naval-propulsion-plant": (0.01, 0.00, 3.73, 0.01),
    "power-plant": (4.12, 0.03, -2.84, 0.01),
    "protein-tertiary-structure": (4.73, 0.01, -2.97, 0.00),
    "wine-quality-red": (0.64, 0.01, -0.97, 0.01),
    "yacht": (1.02, 0.05, -1.63, 0.02),
}
DROPOUT_2018 = {
    "bostonHousing": (2.90, 0.18, -2.40, 0.04),
    "concrete": (4.82, 0.16, -2.93, 0.02),
    "energy": (0.54, 0.06, -1.21, 0.01),
    "kin8nm": (0.08, 0.00, 1.14, 0.01),
    "naval-propulsion-plant": (0.00, 0.00, 4.45, 0.00),
    "power-plant": (4.01, 0.04, -2.80, 0.01),
    "protein-tertiary-structure": (4.27, 0.02, -2.87, 0.00),
    "wine-quality-red": (0.62, 0.01, -0.93, 0.01),
    "yacht": (0.67, 0.05, -1.25, 0.01),
}
SHORT = {"bostonHousing": "boston", "naval-propulsion-plant": "naval", "power-plant": "power",
         "protein-tertiary-structure": "protein", "wine-quality-red": "wine"}


def budget(name: str, steps: int, large_epochs: int) -> tuple[int, int, int]:
    """(epochs, batch size, draws per step): ``steps`` full-batch steps with 8 weight draws
    for the small sets (at most 2000 training rows; the draws are then the only gradient
    noise); ``large_epochs`` epochs of batches of 256 with 4 draws for the others (400 =
    the MC-dropout re-run's 10 x 40 epochs)."""
    n = uci.load(name, 0).x_train.shape[0]
    if n <= 2000:
        return steps, n, 8
    return large_epochs, 256, 4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="yacht,bostonHousing,energy,concrete,wine-quality-red,kin8nm,power-plant,naval-propulsion-plant,"
                    "protein-tertiary-structure")
    ap.add_argument("--families", default="meanfield,subspace",
                    help="comma list; FAMILYxK = an ensemble of K posteriors of FAMILY per split (e.g. subspacex5)")
    ap.add_argument("--steps", type=int, default=6000, help="full-batch steps per split for the small sets")
    ap.add_argument("--large-epochs", type=int, default=400, help="epochs (batch 256) for the sets of over 2000 rows")
    ap.add_argument("--epochs", type=int, default=None, help="epochs for every set (batch 32)")
    ap.add_argument("--likelihood", default="gaussian", choices=["gaussian", "heteroscedastic"],
                    help="gaussian: learned homoscedastic noise (the protocol); heteroscedastic: a second output "
                         "predicts each example's noise")
    ap.add_argument("--splits", type=int, default=None, help="first N splits (default all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "uci.json"))
    args = ap.parse_args()
    console = Console()
    datasets, fams = args.datasets.split(","), args.families.split(",")
    rows = {}
    t_all = time.perf_counter()
    for name in datasets:
        epochs, batch, draws = (args.epochs, 32, 4) if args.epochs else budget(name, args.steps, args.large_epochs)
        splits = None if args.splits is None else min(args.splits, uci.n_splits(name))
        rows[name] = {}
        for fam in fams:
            family, members = _ensemble(fam)
            res = fp.bnn.run_uci(name, family, splits=splits, epochs=epochs, batch_size=batch, num_samples=draws,
                                 members=members, likelihood=args.likelihood)
            rows[name][fam] = {k: v for k, v in res.items() if k.endswith(("_mean", "_se")) or k in (
                "seconds", "epochs", "batch_size", "num_samples", "members", "likelihood", "splits")}
            console.print(f"{name} {fam}: RMSE {res['rmse_mean']:.3f} ± {res['rmse_se']:.3f}  "
                          f"LL {res['test_ll_mean']:.3f} ± {res['test_ll_se']:.3f}  ({res['seconds']:.0f} s, "
                          f"{epochs} epochs of batch {batch}, {draws} draws)")
            write_json(Path(args.out), _payload(rows, fams, args, time.perf_counter() - t_all))
    payload = _payload(rows, fams, args, time.perf_counter() - t_all)
    write_json(Path(args.out), payload)
    _print(console, rows, fams, payload)


def _ensemble(fam: str) -> tuple[str, int]:
    """``"subspacex5"`` -> ``("subspace", 5)``; a plain family name -> ``(name, 1)``."""
    family, sep, k = fam.rpartition("x")
    return (family, int(k)) if sep and k.isdigit() else (fam, 1)


def _columns(fams) -> list[tuple[str, str, str]]:
    """Table columns ``(label, family key, metric prefix)``: each family, and for an
    ensemble also its first member alone (the single fit, ``member1_*``)."""
    cols = []
    for fam in fams:
        if _ensemble(fam)[1] > 1:
            cols.append((f"{_ensemble(fam)[0]} (member 1)", fam, "member1_"))
        cols.append((fam, fam, ""))
    return cols


def _payload(rows, fams, args, seconds):
    wins = {}
    for label, fam, pre in _columns(fams):
        done = [n for n in rows if fam in rows[n]]
        wins[label] = {"beats_dropout_ll": sum(rows[n][fam][pre + "test_ll_mean"] > DROPOUT_2018[n][2] for n in done),
                       "beats_pbp_ll": sum(rows[n][fam][pre + "test_ll_mean"] > PBP[n][2] for n in done),
                       "datasets": len(done)}
    return {"machine": machine_info(), "likelihood": args.likelihood, "steps_per_split": args.steps,
            "large_epochs": args.large_epochs, "epochs": args.epochs, "seconds": seconds, "results": rows,
            "wins": wins, "published": {"pbp": PBP, "mc_dropout_2018": DROPOUT_2018}}


def _print(console, rows, fams, payload):
    cols = _columns(fams)
    for metric, idx, fmt in (("test RMSE (lower is better)", 0, ".2f"), ("test log-likelihood (higher is better)", 2,
                                                                         ".2f")):
        table = Table(title=f"{metric}, {payload['likelihood']} likelihood")
        for col in ["dataset", "PBP", "MC dropout (2018)"] + [c[0] for c in cols]:
            table.add_column(col, justify="right" if col != "dataset" else "left")
        for n, r in rows.items():
            key = "rmse" if idx == 0 else "test_ll"
            cells = [f"{PBP[n][idx]:{fmt}} ± {PBP[n][idx + 1]:{fmt}}",
                     f"{DROPOUT_2018[n][idx]:{fmt}} ± {DROPOUT_2018[n][idx + 1]:{fmt}}"]
            cells += [f"{r[f][pre + key + '_mean']:{fmt}} ± {r[f][pre + key + '_se']:{fmt}}" if f in r else "-"
                      for _, f, pre in cols]
            table.add_row(SHORT.get(n, n), *cells)
        console.print(table)
    for label, w in payload["wins"].items():
        console.print(f"{label}: test LL above MC dropout on {w['beats_dropout_ll']}/{w['datasets']}, "
                      f"above PBP on {w['beats_pbp_ll']}/{w['datasets']}")


if __name__ == "__main__":
    main()
