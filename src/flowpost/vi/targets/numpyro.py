"""A :class:`~flowpost.vi.target.Target` from a NumPyro model (Phan et al. 2019).

The latent sample sites are mapped to R^dim by NumPyro's own bijections
(``biject_to(site.support)``), their unconstrained values flattened in
:func:`jax.flatten_util.ravel_pytree` order (sites sorted by name, each raveled C-order).
``log_prob(u) = -potential_energy(u)``: the log joint with every log-Jacobian included.
Supports that depend on other latent values are re-derived at every evaluation.
Masked-out elements of a latent site (``numpyro.handlers.mask``, a masked distribution,
or the observed entries of ``numpyro.sample(..., obs_mask=...)``, whose imputation site
``<name>_unobserved`` has the data's full shape) do not enter the density; they are left
out of ``u`` and held at 0, so the target stays proper and ``dim`` counts only the
unknowns.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
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
        found["masked"] = [k for k, s in latent.items() if _mask_of(s) is not None]
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
    return z0, found["masked"]


def _mask_of(site):
    """The mask of a latent site (``numpyro.handlers.mask`` and/or a masked distribution),
    or None if every element counts."""
    from numpyro.distributions import MaskedDistribution

    fn_mask = site["fn"]._mask if isinstance(site["fn"], MaskedDistribution) else None
    masks = [m for m in (site.get("mask"), fn_mask) if m is not None and m is not True]
    return masks or None


def _free_elements(model, args, kwargs, masked, z0):
    """For each masked latent site, a boolean array of its unconstrained shape: True where
    the element enters the density. Elements that never do (e.g. the observed entries of
    ``numpyro.sample(..., obs_mask=...)``'s ``<name>_unobserved`` site) would be improper
    directions of the posterior; they are left out of ``u`` and held at 0."""
    from numpyro import handlers

    tr = handlers.trace(model).get_trace(*args, **kwargs)  # concrete: the masks' values
    keep = {}
    for k in masked:
        site, shape = tr[k], z0[k].shape
        m = np.ones(site["fn"].batch_shape, bool)
        for mask in _mask_of(site):
            m = m & np.broadcast_to(np.asarray(mask, bool), m.shape)
        m = m.reshape(m.shape + (1,) * (len(shape) - m.ndim))
        if not m.all():
            keep[k] = np.broadcast_to(m, shape)
    return keep


def from_numpyro(model, *args, **kwargs) -> Target:
    """Wrap ``model(*args, **kwargs)``'s posterior as a Target.

    Args:
        model: a NumPyro model function; ``args``/``kwargs`` are passed to it unchanged (the
            data, typically). Randomness inside the model (if any) uses a fixed seed.
    Returns:
        Target with ``dim`` = total size of the latent sites (less their masked-out
        elements); ``log_prob(u (dim,))``;
        ``constrain(u)`` -> dict of constrained latent sites and ``numpyro.deterministic``
        sites, in the model's order; ``name`` = the model function's name.
    Raises:
        ValueError: the model raises, has discrete latent sites, or has no latent sites.
    """
    from numpyro import handlers
    from numpyro.infer.util import constrain_fn, potential_energy

    seeded = handlers.seed(model, rng_seed=0)
    z0, masked = _inspect(seeded, args, kwargs)
    keep = _free_elements(seeded, args, kwargs, masked, z0) if masked else {}
    flat0 = jax.eval_shape(lambda z: ravel_pytree(z)[0], z0)  # the common dtype
    keys = sorted(z0)  # ravel_pytree's order for a dict
    shapes = [z0[k].shape for k in keys]
    where = [np.flatnonzero(keep[k]) if k in keep else None for k in keys]
    sizes = [math.prod(shp) if w is None else w.size for shp, w in zip(shapes, where)]

    def unravel(u):  # like ravel_pytree's unravel, but keeps u's dtype (float32 or float64)
        out, i = {}, 0
        for k, shp, n, w in zip(keys, shapes, sizes, where):
            part = u[i : i + n]
            if w is not None:  # masked-out elements are held at 0
                part = jnp.zeros(math.prod(shp), u.dtype).at[w].set(part)
            out[k] = part.reshape(shp)
            i += n
        return out

    def log_prob(u):
        return -potential_energy(seeded, args, kwargs, unravel(u))

    def constrain(u):
        return constrain_fn(seeded, args, kwargs, unravel(u), return_deterministic=True)

    dim = sum(sizes)
    try:
        jax.eval_shape(log_prob, jax.ShapeDtypeStruct((dim,), flat0.dtype))
    except Exception as e:
        raise ValueError(f"from_numpyro: evaluating the model's log density failed: {type(e).__name__}: {e}") from e
    return Target(log_prob, dim, constrain, name=getattr(model, "__name__", "numpyro_model"))
