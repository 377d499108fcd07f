"""flowpost: normalizing-flow variational inference in JAX."""

from . import flows

__version__ = "0.1.0"
__all__ = ["flows"]
