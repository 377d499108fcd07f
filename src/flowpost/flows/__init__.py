"""Normalizing flows: bijections with exact log-determinants and flow distributions.

This layer knows nothing of variational inference: it is a flow library.
"""

from .autoregressive import MaskedAutoregressive
from .bijection import Bijection, Chain, Frozen, Invert, NoInverseError, Scan
from .constructors import iaf, maf, planar, radial, realnvp, spline, sylvester
from .coupling import Coupling, affine_coupling, spline_coupling
from .distribution import Flow, Mixture, StandardNormal, StudentT
from .elementwise import AffineElementwise, Exp, Sigmoid, Softplus, Tanh
from .linear import ActNorm, LULinear, Permute, RandomPermute, Reverse, TriangularAffine
from .nn import MADE, MLP, Linear
from .residual import Planar, Radial, Sylvester
from .train import fit_to_data
from .transformers import Affine, RationalQuadraticSpline

__all__ = [
    "Bijection",
    "Chain",
    "Frozen",
    "Invert",
    "Scan",
    "NoInverseError",
    "Coupling",
    "affine_coupling",
    "spline_coupling",
    "MaskedAutoregressive",
    "Planar",
    "Radial",
    "Sylvester",
    "ActNorm",
    "LULinear",
    "Permute",
    "RandomPermute",
    "Reverse",
    "TriangularAffine",
    "AffineElementwise",
    "Exp",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "Affine",
    "RationalQuadraticSpline",
    "MADE",
    "MLP",
    "Linear",
    "Flow",
    "Mixture",
    "StandardNormal",
    "StudentT",
    "realnvp",
    "spline",
    "maf",
    "iaf",
    "planar",
    "radial",
    "sylvester",
    "fit_to_data",
]
