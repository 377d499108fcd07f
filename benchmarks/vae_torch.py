"""The PyTorch peer of flowpost's planar-flow VAE (MLP architecture), for epoch timing.

Same architecture as ``fp.vae.VAEConfig(flow="planar", arch="mlp")``: encoder 784-300-300
(ELU) with linear heads for ``mu, log_sigma`` and an ELU context head ``h`` (64), 16
planar flows whose ``u, w, b`` are ``base + W h`` (Rezende & Mohamed 2015, with the
``u_hat`` invertibility correction), decoder 64-300-300-784 (ELU) with Bernoulli logits;
one draw per image, ELBO with KL weight ``beta``, Adam, minibatches of 100 in shuffled
order. Written the way a PyTorch user would (eager, batched tensor ops, one
``optimizer.step()`` per minibatch). Used by ``benchmarks/vae.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_SOFTPLUS_ONE = math.log(math.expm1(1.0))


class PlanarVAE(nn.Module):
    def __init__(self, dim=784, latent=64, hidden=300, context=64, layers=16):
        super().__init__()
        self.latent, self.layers = latent, layers
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU())
        self.head = nn.Linear(hidden, 2 * latent)
        self.ctx = nn.Linear(hidden, context)
        per = 2 * latent + 1  # u, w, b per layer
        self.base = nn.Parameter(torch.cat([torch.zeros(layers, latent),
                                            torch.randn(layers, latent) / math.sqrt(latent),
                                            torch.zeros(layers, 1)], dim=1))
        self.hyper = nn.Linear(context, layers * per)
        nn.init.zeros_(self.hyper.weight)
        nn.init.zeros_(self.hyper.bias)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, dim))

    def elbo(self, x, beta):
        f = self.enc(x)
        mu, log_sigma = self.head(f).chunk(2, dim=1)
        h = F.elu(self.ctx(f))
        p = self.base + self.hyper(h).view(-1, self.layers, 2 * self.latent + 1)
        eps = torch.randn_like(mu)
        z = mu + log_sigma.exp() * eps
        log_q = (-0.5 * eps**2 - log_sigma).sum(1) - 0.5 * self.latent * math.log(2 * math.pi)
        for k in range(self.layers):
            u, w, b = p[:, k, :self.latent], p[:, k, self.latent:-1], p[:, k, -1]
            wu = (w * u).sum(1, keepdim=True)
            m = -1.0 + F.softplus(wu + _SOFTPLUS_ONE)
            u_hat = u + (m - wu) * w / (w * w).sum(1, keepdim=True)
            t = torch.tanh((w * z).sum(1) + b)
            z = z + u_hat * t[:, None]
            log_q = log_q - torch.log1p((1 - t**2) * (w * u_hat).sum(1))
        logits = self.dec(z)
        log_px = (x * logits - F.softplus(logits)).sum(1)
        log_pz = -0.5 * (z**2).sum(1) - 0.5 * self.latent * math.log(2 * math.pi)
        return log_px, log_pz, log_q


def make(seed=0, lr=5e-4, threads=None):
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    model = PlanarVAE()
    return model, torch.optim.Adam(model.parameters(), lr=lr)


def epoch(model, opt, x, beta=1.0, batch=100, generator=None):
    """One pass over ``x`` (a float32 tensor (n, 784)); returns the mean loss."""
    order = torch.randperm(x.shape[0], generator=generator)
    total, n = 0.0, x.shape[0] // batch
    for i in range(n):
        xb = x[order[i * batch:(i + 1) * batch]]
        log_px, log_pz, log_q = model.elbo(xb, beta)
        loss = -(log_px - beta * (log_q - log_pz)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
    return total / n
