"""flowpost: normalizing-flow variational inference in JAX.

    import flowpost as fp
    result = fp.fit(fp.targets.get("eight_schools"), key=jax.random.key(0))
"""

from . import flows, vi
from .vi import FitResult, Target, fit, load, targets

__version__ = "0.1.0"
__all__ = ["flows", "vi", "targets", "Target", "fit", "load", "FitResult"]


def __getattr__(name):
    # fp.bnn and fp.vae are imported on first use (they are applications, not the core),
    # as is fp.data (the data-set files under $FLOWPOST_DATA).
    import importlib

    if name in ("bnn", "vae"):
        return importlib.import_module(f".experiments.{name}", __name__)
    if name == "data":
        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module 'flowpost' has no attribute {name!r}")
