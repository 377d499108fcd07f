"""A :class:`~flowpost.vi.target.Target` from a NumPyro model (Phan et al. 2019).

The latent sample sites are mapped to R^dim by NumPyro's own bijections
(``biject_to(site.support)``), their unconstrained values flattened in
:func:`jax.flatten_util.ravel_pytree` order (sites sorted by name, each raveled C-order).
``log_prob(u) = -potential_energy(u)``: the log joint with every log-Jacobian included.
Supports that depend on other latent values are re-derived at every evaluation.
"""

from __future__ import annotations

import math

import jax
from jax.flatten_util import ravel_pytree

from ..target import Target

__all__ = ["from_numpyro"]


def _inspect(model, args, kwargs):
    """Shapes of the unconstrained latent sites, found by tracing the model abstractly
    (jax.eval_shape: nothing is compiled or computed); raises ValueError on unusable models."""
    from numpyro import handlers
    from numpyro.infer.util import unconstrain_fn

    found = {}

    def run():
        tr = handlers.trace(model).get_trace(*args, **kwargs)
        latent = {k: s for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
        found["discrete"] = [k for k, s in latent.items() if s["fn"].support.is_discrete]
        found["latent"] = list(latent)
        found["subsampled"] = [(k, s["args"][0], s["args"][1]) for k, s in tr.items()
                               if s["type"] == "plate" and s["args"][1] is not None and s["args"][1] < s["args"][0]]
        if found["discrete"] or not latent:
            return {}
        return unconstrain_fn(model, args, kwargs, {k: s["value"] for k, s in latent.items()})

    try:
        z0 = jax.eval_shape(run)
    except Exception as e:
        raise ValueError(
            f"from_numpyro: running the model with the given arguments raised {type(e).__name__}: {e}. "
            "Check that the model runs and is traceable by JAX, e.g. "
            "jax.jit(lambda: numpyro.handlers.seed(model, 0)(*args, **kwargs))()."
        ) from e
    if found["subsampled"]:
        name, size, sub = found["subsampled"][0]
        raise ValueError(
            f"from_numpyro: plate {name!r} subsamples {sub} of {size} (subsample_size={sub}); a Target is "
            "one deterministic log density, so the subsample would be the same fixed rows at every step and "
            "the posterior wrong. Remove `subsample_size` (the full data are evaluated in one vmapped "
            "call), or, for a neural network with mini-batches, use fp.bnn."
        )
    if found["discrete"]:
        raise ValueError(
            f"from_numpyro: the model has discrete latent sites {found['discrete']}; a flow needs a "
            "continuous density. Marginalise them out in the model (e.g. write the mixture with "
            "numpyro.distributions.MixtureSameFamily, or sum over their values with logsumexp in a "
            "numpyro.factor), or observe them."
        )
    if not found["latent"]:
        raise ValueError(
            "from_numpyro: the model has no latent sample sites (every site is observed), so there is "
            "nothing to infer. Leave the unknowns unobserved (numpyro.sample without `obs=`)."
        )
    return z0


def from_numpyro(model, *args, **kwargs) -> Target:
    """Wrap ``model(*args, **kwargs)``'s posterior as a Target.

    Args:
        model: a NumPyro model function; ``args``/``kwargs`` are passed to it unchanged (the
            data, typically). Randomness inside the model (if any) uses a fixed seed.
    Returns:
        Target with ``dim`` = total size of the latent sites; ``log_prob(u (dim,))``;
        ``constrain(u)`` -> dict of constrained latent sites and ``numpyro.deterministic``
        sites, in the model's order; ``name`` = the model function's name.
    Raises:
        ValueError: the model raises, has discrete latent sites, or has no latent sites.
    """
    from numpyro import handlers
    from numpyro.infer.util import constrain_fn, potential_energy

    seeded = handlers.seed(model, rng_seed=0)
    z0 = _inspect(seeded, args, kwargs)
    flat0 = jax.eval_shape(lambda z: ravel_pytree(z)[0], z0)  # (dim,) and the common dtype
    keys = sorted(z0)  # ravel_pytree's order for a dict
    shapes = [z0[k].shape for k in keys]
    sizes = [math.prod(z0[k].shape) for k in keys]

    def unravel(u):  # like ravel_pytree's unravel, but keeps u's dtype (float32 or float64)
        out, i = {}, 0
        for k, shp, n in zip(keys, shapes, sizes):
            out[k] = u[i : i + n].reshape(shp)
            i += n
        return out

    def log_prob(u):
        return -potential_energy(seeded, args, kwargs, unravel(u))

    def constrain(u):
        return constrain_fn(seeded, args, kwargs, unravel(u), return_deterministic=True)

    try:
        jax.eval_shape(log_prob, jax.ShapeDtypeStruct(flat0.shape, flat0.dtype))
    except Exception as e:
        raise ValueError(f"from_numpyro: evaluating the model's log density failed: {type(e).__name__}: {e}") from e
    return Target(log_prob, int(flat0.size), constrain, name=getattr(model, "__name__", "numpyro_model"))
