"""Accuracy on the eight posteriordb reference posteriors, default settings, no tuning.

For each posterior and family: worst |mean - ref mean| / ref sd over the quantities
(|z|), worst |log(sd / ref sd)|, PSIS k-hat, wall time. Target: |z| < 0.1,
|log sd| < 0.1, k-hat < 0.7 on every posterior with the default family.

    python benchmarks/posteriordb.py [--families flow,fullrank,meanfield] [--steps 3000]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
import warnings

warnings.filterwarnings("ignore", category=FutureWarning)

import jax  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import flowpost as fp  # noqa: E402
from flowpost.vi.targets import posteriordb  # noqa: E402


def run(names, families, steps, seed):
    rows = []
    for name in names:
        target = fp.targets.get(name)
        for family in families:
            t0 = time.perf_counter()
            result = fp.fit(target, family=family, steps=steps, key=jax.random.key(seed), progress=False)
            wall = time.perf_counter() - t0
            d = result.diagnostics()
            c = result.compare_reference()
            ok = c["max_abs_z"] < 0.1 and c["max_abs_log_sd"] < 0.1 and d["khat"] < 0.7
            rows.append({"posterior": name, "family": family, "max_abs_z": c["max_abs_z"],
                         "max_abs_log_sd": c["max_abs_log_sd"], "khat": d["khat"], "ess": d["ess"],
                         "elbo": d["elbo"], "converged": d["converged"], "seconds": wall, "pass": ok,
                         "worst_mean": c["worst_mean"], "worst_sd": c["worst_sd"], "message": result.message})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--posteriors", default=",".join(posteriordb.POSTERIORS))
    p.add_argument("--families", default="flow,fullrank,meanfield")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "posteriordb.json"))
    a = p.parse_args()
    rows = run(a.posteriors.split(","), a.families.split(","), a.steps, a.seed)
    table = Table(title=f"posteriordb reference posteriors ({a.steps} steps, seed {a.seed}): |z| / |log sd| / k-hat")
    for col in ("posterior", "family", "|z|", "|log sd|", "k-hat", "ESS", "s", "pass"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["posterior"], r["family"], f"{r['max_abs_z']:.3f}", f"{r['max_abs_log_sd']:.3f}",
                      f"{r['khat']:.2f}", f"{r['ess']:.0f}", f"{r['seconds']:.0f}", "yes" if r["pass"] else "NO")
    Console().print(table)
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


def markdown(rows) -> str:
    """The README's table: one row per posterior, one column per family."""
    families = list(dict.fromkeys(r["family"] for r in rows))
    cells = {(r["posterior"], r["family"]): r for r in rows}
    out = ["| posterior | " + " | ".join(families) + " |", "|---|" + "---|" * len(families)]
    for name in dict.fromkeys(r["posterior"] for r in rows):
        row = []
        for f in families:
            r = cells.get((name, f))
            row.append("" if r is None else f"{r['max_abs_z']:.2g}/{r['max_abs_log_sd']:.2g}/{r['khat']:.2f}"
                       + (" ✓" if r["pass"] else ""))
        out.append(f"| {name} | " + " | ".join(row) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
