"""Compiling programs that run once.

A fit compiles several programs that run once or a handful of times (the probes of the
target, a flow's initial weights, the Laplace Hessian, the pilot sampler, the
diagnostics' densities) next to the one that runs thousands of times (the training
chunk). On a CPU, XLA spends most of a small program's compile time in LLVM's
optimisation passes; at ``xla_backend_optimization_level=0`` the same program compiles
several times faster and runs somewhat slower, which for a program run once is a clear
gain. XLA's newer CPU fusion emitters (``xla_cpu_use_fusion_emitters``) are turned off
for these programs too: the older emitters compile them faster still (a default fit of
a small posterior 0.35-0.6 s sooner in all). Measurements: ``docs/time-to-accuracy.md``.

A program that runs once but does much work (the diagnostics' log density of 4000 draws
over 10^5 data rows) is the exception: at level 0 its loops are not vectorised, and that
one took 20 s to run instead of 2.7 s. XLA's cost analysis of the lowered program decides:
above :data:`HEAVY_FLOPS` it compiles with XLA's defaults. Other backends keep XLA's
defaults always.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax

__all__ = ["filter_once", "hoist", "Hoisted"]

#: above this many floating-point operations (XLA's cost analysis, loop bodies counted
#: once) a program is compiled with XLA's defaults: its run time outweighs the compile
#: time saved. A 4000-draw pilot of the default flow is about 2e7; the diagnostics'
#: log density over 10^5 logistic-regression rows, 4e8 per group of 100 draws.
HEAVY_FLOPS = 1e8


@functools.cache
def _options() -> dict | None:
    if jax.default_backend() != "cpu":
        return None
    return {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a tracer (the call is inside a ``jit``, ``vmap`` or ``grad``)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


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
    """``fun`` compiled for a program that runs once or a few times (see the module text),
    with Equinox's filter: array leaves of the arguments are traced, the rest is static (a
    new value compiles again, as ``eqx.filter_jit``), and the result may hold non-array
    leaves (e.g. a module's static fields). Compiled programs are cached per static part,
    as ``jax.jit``'s; a heavy program (see the module text) gets XLA's defaults. Called
    with traced arguments (inside another ``jit``, ``vmap`` or ``grad``), it is ``fun``
    itself, traced into the caller's program (XLA takes compiler options only for a
    whole program)."""
    results: dict = {}
    light: dict = {}  # per signature: whether the program is light enough for the fast compile

    def arrays_of(static, dynamic):
        a, k = eqx.combine(dynamic, static.tree)
        out, out_static = eqx.partition(fun(*a, **k), eqx.is_array)
        results[static] = out_static  # recorded when traced; a cache hit reads it
        return out

    fast = jax.jit(arrays_of, static_argnums=0, compiler_options=_options())
    default = jax.jit(arrays_of, static_argnums=0)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        if traced((args, kwargs)):  # inside another transformation: traced into it
            return fun(*args, **kwargs)
        dynamic, static = eqx.partition((args, kwargs), eqx.is_array)
        key = _Static(static)
        leaves, treedef = jax.tree.flatten(dynamic)
        signature = (key, treedef, tuple(jax.typeof(x) for x in leaves))
        if signature not in light:
            light[signature] = _is_light(fast, key, dynamic, leaves)
        return eqx.combine((fast if light[signature] else default)(key, dynamic), results[key])

    return call


def _is_light(jitted, key, dynamic, leaves) -> bool:
    """Whether a program gets the options of a program run once: always off a CPU (no
    options there), and on a CPU unless its inputs are large (over 10^5 numbers, e.g. a
    model's data) and XLA's cost analysis puts it above :data:`HEAVY_FLOPS`."""
    if _options() is None or sum(x.size for x in leaves) <= 100_000:
        return True
    cost = jitted.lower(key, dynamic).cost_analysis() or {}
    if isinstance(cost, list):  # one entry per program in some JAX versions
        cost = cost[0] if cost else {}
    return float(cost.get("flops", 0.0)) <= HEAVY_FLOPS


class Hoisted(eqx.Module):
    """A function with the arrays it closes over as pytree leaves (:func:`hoist`).

    A jitted function that closes over a large array (a model's data) compiles that array
    into its program as a constant: XLA then spends time proportional to its size on
    every program that uses it (measured: 0.4-2 s per program for 10^6 rows of
    logistic-regression data, against 0.1 s with the data as an input). Passed as an
    argument to a filtered jit (``eqx.filter_jit``, :func:`filter_once`), a ``Hoisted``'s
    arrays are inputs instead, and programs compiled for one data set serve another of
    the same shapes."""

    jaxpr: jax.extend.core.Jaxpr = eqx.field(static=True)
    out_tree: jax.tree_util.PyTreeDef = eqx.field(static=True)
    consts: list

    def __call__(self, *args):
        out = jax.core.eval_jaxpr(self.jaxpr, self.consts, *jax.tree.leaves(args))
        return jax.tree.unflatten(self.out_tree, out)


def hoist(fun, *example_args) -> Hoisted:
    """``fun`` traced once at ``example_args`` (arrays or ``jax.ShapeDtypeStruct``s) as a
    :class:`Hoisted`: the same function for arguments of those shapes and dtypes (and
    under ``vmap``, ``grad``, ``jit``), with the arrays it closes over as leaves.

    Arrays closed over inside a jitted function that ``fun`` calls (a NumPyro target's
    ``log_prob`` is one) are hoisted too: such calls are inlined. Arrays closed over
    inside the body of a ``lax.scan`` or ``while_loop`` stay constants of that body."""
    closed, shape = jax.make_jaxpr(fun, return_shape=True)(*example_args)
    flat = jax.make_jaxpr(lambda *a: _inlined(closed.jaxpr, closed.consts, *a))(*jax.tree.leaves(example_args))
    return Hoisted(flat.jaxpr, jax.tree.structure(shape), list(flat.consts))


def _inlined(jaxpr, consts, *args):
    """Evaluate ``jaxpr`` as ``jax.core.eval_jaxpr`` does, but with every nested ``jit``
    call evaluated inline, so that its closed-over constants become the caller's."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        if eqn.primitive.name in ("jit", "pjit"):
            inner = eqn.params["jaxpr"]
            outvals = _inlined(inner.jaxpr, inner.consts, *invals)
        else:
            with eqn.ctx.manager:
                outvals = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
            outvals = outvals if eqn.primitive.multiple_results else [outvals]
        env.update(zip(eqn.outvars, outvals))
    return [read(v) for v in jaxpr.outvars]
