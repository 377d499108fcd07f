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

The model is traced the way NumPyro's own ``initialize_model`` traces it for NUTS: every
latent site gets a substituted value (``init_to_uniform``: uniform in (-2, 2) on the
unconstrained scale) instead of a draw from its distribution, so sites that cannot be
sampled (``dist.ImproperUniform`` on any constraint, a flat prior as ported from Stan)
trace like any other; after that the model is only ever run with every latent value
substituted (``potential_energy``, ``constrain_fn``). ``numpyro.contrib.control_flow.scan``,
nested plates, ``handlers.reparam``, ``numpyro.factor``, deterministic sites and
``numpyro.prng_key`` (a fixed key, as in NumPyro's potential) work as they do under NUTS.
An error raised while the model runs names the site where it happened.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..subsample import Rows
from ..target import Target

__all__ = ["from_numpyro"]


def _site_tracker():
    """A NumPyro ``Messenger`` class recording the last site the model entered and the last
    it finished (``.entered``, ``.left``: names or None), so that an exception raised while
    the model runs can say where: inside a site's own handling (its distribution, support
    or substituted value) when ``entered != left``, else in the model's code after ``left``."""
    from numpyro.primitives import Messenger

    class SiteTracker(Messenger):
        def __init__(self, fn):
            super().__init__(fn)
            self.entered = self.left = None

        def __enter__(self):  # each run of the model starts afresh
            self.entered = self.left = None
            return super().__enter__()

        def process_message(self, msg):
            if msg.get("type") in ("sample", "deterministic", "param"):
                self.entered = msg.get("name")

        def postprocess_message(self, msg):
            if msg.get("type") in ("sample", "deterministic", "param"):
                self.left = msg.get("name")

        def where(self) -> str:
            if self.entered is not None and self.entered != self.left:
                return f" at site {self.entered!r}"
            if self.left is not None:
                return f" in the model's code after site {self.left!r}"
            return " before its first sample site"

    return SiteTracker


def _model_error(where, what, e):
    """The ValueError for an exception ``e`` raised while running the model; ``where`` says
    where (" at site 'x'", see ``SiteTracker.where``)."""
    hint = ""
    if isinstance(e, NotImplementedError) and where.startswith(" at site"):
        hint = (
            "If the site's support has no bijection to the real line "
            "(numpyro.distributions.transforms.biject_to raises), register one with biject_to.register or "
            "reparameterise the site. "
        )
    return ValueError(
        f"from_numpyro: {what} raised {type(e).__name__}: {e} (it happened{where}). {hint}Check that the model "
        "runs and is traceable by JAX with a value substituted for every latent site, as NUTS runs it: "
        "numpyro.infer.util.initialize_model(jax.random.key(0), model, model_args=args, "
        "model_kwargs=kwargs) raises the same error if the model is at fault."
    )


def _failing_site(model, args, kwargs, unravel, u) -> str:
    """Where evaluating the log density at ``u`` fails: NumPyro computes every site's
    ``log_prob`` after running the model, so the tracker cannot tell; here each site's
    ``log_prob`` is evaluated in turn (abstractly). Returns `` at site 'x'`` or ''."""
    from numpyro import handlers
    from numpyro.infer.util import _unconstrain_params

    failed: list[str] = []

    def run(u):
        tr = handlers.trace(_unconstrain_params(model, unravel(u))).get_trace(*args, **kwargs)
        for name, site in tr.items():
            if site["type"] == "sample":
                failed[:] = [name]
                site["fn"].log_prob(site["value"])
        failed.clear()

    try:
        jax.eval_shape(run, u)
    except Exception:  # noqa: BLE001  (the caller reports the original error)
        pass
    return f" at site {failed[0]!r}, in its log_prob" if failed else ""


def _inspect(model, tracker, args, kwargs):
    """Shapes of the unconstrained latent sites (dict name -> ShapeDtypeStruct) and the names
    of the masked ones, found by tracing the model abstractly (jax.eval_shape: nothing is
    compiled or computed) with a substituted value for every latent site (NumPyro's
    ``init_to_uniform``, as ``initialize_model`` does: an improper site is never sampled);
    raises ValueError on unusable models."""
    from numpyro import handlers
    from numpyro.distributions import Delta
    from numpyro.infer.initialization import init_to_uniform
    from numpyro.infer.util import unconstrain_fn

    found = {}

    def run():
        tr = handlers.trace(handlers.substitute(model, substitute_fn=init_to_uniform)).get_trace(*args, **kwargs)
        latent = {k: s for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
        found["discrete"] = [k for k, s in latent.items() if s["fn"].support.is_discrete]
        found["delta"] = [k for k, s in latent.items() if isinstance(s["fn"], Delta)]
        found["latent"] = list(latent)
        found["masked"] = [k for k, s in latent.items() if _mask_of(s) is not None]
        found["subsampled"] = {
            k: (int(s["args"][0]), int(s["args"][1]))
            for k, s in tr.items()
            if s["type"] == "plate" and s["args"][1] is not None and s["args"][1] < s["args"][0]
        }
        found["local"] = [
            (k, f.name) for k, s in latent.items() for f in s["cond_indep_stack"] if f.name in found["subsampled"]
        ]
        if found["discrete"] or found["delta"] or not latent:
            return {}
        return unconstrain_fn(model, args, kwargs, {k: s["value"] for k, s in latent.items()})

    try:
        z0 = jax.eval_shape(run)
    except Exception as e:
        raise _model_error(tracker.where(), "running the model with the given arguments", e) from e
    if found["local"]:
        site, plate = found["local"][0]
        raise ValueError(
            f"from_numpyro: latent site {site!r} lies inside plate {plate!r}, which subsamples its rows "
            "(subsample_size): a local latent variable per row would change with every batch, so it cannot be "
            "subsampled. Remove `subsample_size` from that plate (every step then reads all rows), or keep "
            "only observed sites inside it."
        )
    if found["discrete"]:
        raise ValueError(
            f"from_numpyro: the model has discrete latent sites {found['discrete']}; a flow needs a "
            "continuous density. Marginalise them out in the model (e.g. write the mixture with "
            "numpyro.distributions.MixtureSameFamily, or sum over their values with logsumexp in a "
            "numpyro.factor), or observe them."
        )
    if found["delta"]:
        raise ValueError(
            f"from_numpyro: latent site {found['delta'][0]!r} has a Delta distribution, which has no density "
            "to infer; record a computed value with numpyro.deterministic instead (as NUTS requires)."
        )
    if not found["latent"]:
        raise ValueError(
            "from_numpyro: the model has no latent sample sites (every site is observed), so there is "
            "nothing to infer. Leave the unknowns unobserved (numpyro.sample without `obs=`)."
        )
    return z0, found["masked"], found["subsampled"]


@contextlib.contextmanager
def _all_rows():
    """Silence NumPyro's warning that a plate's substituted indices (all ``N`` rows, for the
    full-data density) differ in number from its ``subsample_size``: that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="subsample_size does not match len")
        yield


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
    from numpyro.infer.initialization import init_to_uniform

    # concrete (the masks' values), with substituted latent values like _inspect
    tr = handlers.trace(handlers.substitute(model, substitute_fn=init_to_uniform)).get_trace(*args, **kwargs)
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


def _unraveller(z0, keep):
    """``(dim, unravel)``: ``unravel(u (dim,))`` -> dict site -> unconstrained value of the
    site's shape, sites in :func:`jax.flatten_util.ravel_pytree` order (sorted names), each
    C-order, masked-out elements held at 0; it keeps ``u``'s dtype (float32 or float64)."""
    keys = sorted(z0)  # ravel_pytree's order for a dict
    shapes = [z0[k].shape for k in keys]
    where = [np.flatnonzero(keep[k]) if k in keep else None for k in keys]
    sizes = [math.prod(shp) if w is None else w.size for shp, w in zip(shapes, where)]

    def unravel(u):
        out, i = {}, 0
        for k, shp, n, w in zip(keys, shapes, sizes, where):
            part = u[i : i + n]
            if w is not None:  # masked-out elements are held at 0
                part = jnp.zeros(math.prod(shp), u.dtype).at[w].set(part)
            out[k] = part.reshape(shp)
            i += n
        return out

    return sum(sizes), unravel


def _site_log_probs(model, args, kwargs, unravel):
    """``u (dim,)`` -> dict site name -> its summed log density (scalar), the terms whose
    sum is ``log_prob(u)``: each sample site's log density (observed ones included,
    ``numpyro.factor`` sites too) and each latent site's log-Jacobian, named
    ``_<site>_log_det`` as NumPyro names it. Used to say which site is NaN or -inf."""
    from numpyro.infer.util import _unconstrain_params, compute_log_probs

    def by_site(u):
        return compute_log_probs(_unconstrain_params(model, unravel(u)), args, kwargs, {})[0]

    return by_site


def from_numpyro(model, *args, **kwargs) -> Target:
    """Wrap ``model(*args, **kwargs)``'s posterior as a Target.

    Args:
        model: a NumPyro model function; ``args``/``kwargs`` are passed to it unchanged (the
            data, typically). Randomness inside the model (if any) uses a fixed seed.
            Improper flat priors (``dist.ImproperUniform``) are fine: the model is traced
            with substituted values, as NumPyro's ``initialize_model`` does.
    Returns:
        Target with ``dim`` = total size of the latent sites (less their masked-out
        elements); ``log_prob(u (dim,))`` (``-potential_energy``; it carries
        ``log_prob.by_site(u)`` -> dict site -> log density term, which
        :func:`flowpost.fit` uses to name the sites of a density that is NaN or -inf
        where the fit must start); ``constrain(u)`` -> dict of constrained latent sites
        and ``numpyro.deterministic`` sites, in the model's order; ``name`` = the model
        function's name.
    Raises:
        ValueError: the model raises (the message names the site), has discrete or Delta
        latent sites, has no latent sites, or has a latent site inside a subsampled plate.
    A plate with ``subsample_size`` (the data plate of a large model) makes the Target's
    ``rows``: :func:`flowpost.fit` then reads one batch of rows per step, with control
    variates (:mod:`flowpost.vi.subsample`); ``log_prob`` itself reads all the rows.
    """
    from numpyro import handlers
    from numpyro.infer.util import constrain_fn, potential_energy

    tracked = _site_tracker()(handlers.seed(model, rng_seed=0))
    z0, masked, plates = _inspect(tracked, tracked, args, kwargs)
    # a plate with subsample_size: the Target's log density reads every row (the plate's
    # indices substituted with all of them), and `rows` lets fp.fit read a batch per step
    every = {name: jnp.arange(n) for name, (n, _) in plates.items()}
    sized = handlers.substitute(tracked, data=every) if plates else tracked
    keep = _free_elements(tracked, args, kwargs, masked, z0) if masked else {}
    flat0 = jax.eval_shape(lambda z: ravel_pytree(z)[0], z0)  # the common dtype
    dim, unravel = _unraveller(z0, keep)

    # jitted, so that a caller evaluating eagerly (e.g. a gradient at the mode) gets what a
    # compiled caller gets: NumPyro validates distribution arguments only on concrete values,
    # raising where the compiled density is NaN (a rejection)
    @jax.jit
    def log_prob(u):
        with _all_rows():
            return -potential_energy(sized, args, kwargs, unravel(u))

    @jax.jit
    def constrain(u):
        with _all_rows():
            return constrain_fn(sized, args, kwargs, unravel(u), return_deterministic=True)

    def log_prob_batch(u, idx):  # the plate scales its sites by N / B itself
        return -potential_energy(handlers.substitute(tracked, data=dict(idx)), args, kwargs, unravel(u))

    u0 = jax.ShapeDtypeStruct((dim,), flat0.dtype)
    for fn, what in ((log_prob, "evaluating the model's log density"), (constrain, "constraining the sites")):
        try:
            jax.eval_shape(fn, u0)
        except Exception as e:
            where = tracked.where() if tracked.entered != tracked.left else None
            where = where or _failing_site(tracked, args, kwargs, unravel, u0) or tracked.where()
            raise _model_error(where, what, e) from e
    log_prob.by_site = jax.jit(  # type: ignore[attr-defined]
        _site_log_probs(sized, args, kwargs, unravel)
    )
    rows = Rows(plates, log_prob_batch) if plates else None
    return Target(log_prob, dim, constrain, name=getattr(model, "__name__", "numpyro_model"), rows=rows)
