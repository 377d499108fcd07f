"""flowpost: normalizing-flow variational inference in JAX.

    import flowpost as fp
    result = fp.fit(fp.targets.get("eight_schools"), key=jax.random.key(0))
"""

from . import flows, vi
from .vi import FitResult, Target, fit, load, targets

__version__ = "0.1.0"
__all__ = ["flows", "vi", "targets", "Target", "fit", "load", "FitResult"]
