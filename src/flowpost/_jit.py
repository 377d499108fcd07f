"""Compiling programs that run once.

A fit compiles several programs that run once or a handful of times (the probes of the
target, a flow's initial weights, the Laplace Hessian, the pilot sampler, the
diagnostics' densities) next to the one that runs thousands of times (the training
chunk). On a CPU, XLA spends most of a small program's compile time in LLVM's
optimisation passes; at ``xla_backend_optimization_level=0`` the same program compiles
several times faster and runs somewhat slower, which for a program run once is a clear
gain (measurements: ``docs/time-to-accuracy.md``). Other backends keep XLA's defaults.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax

__all__ = ["once", "filter_once"]


@functools.cache
def _options() -> dict | None:
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def once(fun, **jit_kwargs):
    """``jax.jit(fun)`` compiled for a program that runs once or a few times (see the
    module text); the same function, arguments and results."""
    return jax.jit(fun, compiler_options=_options(), **jit_kwargs)


class _Static:
    """The non-array part of a pytree as a hashable static argument (its structure and
    leaves compared by value)."""

    def __init__(self, tree):
        self.leaves, self.treedef = jax.tree.flatten(tree)
        self.tree = tree
        self._key = (self.treedef, tuple(self.leaves))

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, _Static) and self._key == other._key


def filter_once(fun):
    """:func:`once` with Equinox's filter: array leaves of the arguments are traced, the
    rest is static (a new value compiles again, as ``eqx.filter_jit``), and the result
    may hold non-array leaves (e.g. a module's static fields). Compiled programs are
    cached per static part, as ``jax.jit``'s."""
    results: dict = {}

    def arrays_of(static, dynamic):
        a, k = eqx.combine(dynamic, static.tree)
        out, out_static = eqx.partition(fun(*a, **k), eqx.is_array)
        results[static] = out_static  # recorded when traced; a cache hit reads it
        return out

    compiled = once(arrays_of, static_argnums=0)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        dynamic, static = eqx.partition((args, kwargs), eqx.is_array)
        key = _Static(static)
        out = compiled(key, dynamic)
        return eqx.combine(out, results[key])

    return call
