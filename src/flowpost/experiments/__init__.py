"""Applications built on :mod:`flowpost.vi` and :mod:`flowpost.flows`.

* :mod:`flowpost.experiments.bnn`: posteriors over neural-network weights (UCI, MNIST).
* :mod:`flowpost.experiments.vae`: VAEs whose encoder posterior is a normalizing flow.

Nothing in ``flows`` or ``vi`` imports from here.
"""
