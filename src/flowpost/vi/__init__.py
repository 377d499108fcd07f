"""Variational inference with flows: targets, families, objectives, the fit loop, results.

This layer knows nothing of VAEs or of the command line.
"""

from . import families, objectives, targets
from .diagnostics import compare, psis
from .fit import FitState, default_optimizer, fit, flat_params, freeze_nonfinite, make_step
from .init import laplace
from .result import FitResult, load
from .target import Target, flatten_draws

__all__ = [
    "Target",
    "targets",
    "families",
    "objectives",
    "fit",
    "FitResult",
    "FitState",
    "make_step",
    "freeze_nonfinite",
    "flat_params",
    "default_optimizer",
    "laplace",
    "load",
    "compare",
    "psis",
    "flatten_draws",
]
