"""Flow-VAEs: variational autoencoders whose encoder posterior is a normalizing flow.

    import flowpost as fp
    cfg = fp.vae.TrainConfig(model=fp.vae.VAEConfig(flow="sylvester-o"), epochs=10)
    result = fp.vae.train(cfg, out="runs/sylvester")       # checkpoints, history, PNGs
    fp.vae.evaluate_run("runs/sylvester", samples=5000)    # test -ELBO and NLL -> eval.json

Posterior flows (``fp.vae.FLOWS``): none, planar (Rezende & Mohamed 2015), iaf (Kingma
et al. 2016), sylvester-o/-h/-t (van den Berg et al. 2018), spline (conditional RQ
splines, as in f-VAE, Su & Wu 2018). Objectives: the ELBO with KL warm-up and the IWAE
bound (Burda et al. 2015). Architectures: MLP, and the gated convolutional networks of
van den Berg et al. 2018.
"""

from . import data, evaluate, likelihoods, nets, objectives, plots
from .data import ImageData, binarized_mnist, frey_faces
from .data import load as load_data
from .evaluate import log_likelihood
from .model import ARCHS, VAE, VAEConfig, make_vae
from .posterior import FLOWS, Posterior, make_flow
from .runs import TrainConfig, evaluate_run, load
from .train import TrainResult, beta_schedule, train

__all__ = [
    "data",
    "evaluate",
    "likelihoods",
    "nets",
    "objectives",
    "plots",
    "ImageData",
    "binarized_mnist",
    "frey_faces",
    "load_data",
    "log_likelihood",
    "ARCHS",
    "VAE",
    "VAEConfig",
    "make_vae",
    "FLOWS",
    "Posterior",
    "make_flow",
    "TrainConfig",
    "evaluate_run",
    "load",
    "TrainResult",
    "beta_schedule",
    "train",
]
