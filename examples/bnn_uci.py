"""A Bayesian neural network on a UCI regression set (yacht hydrodynamics, split 0): a flow
posterior over the last layer of a one-hidden-layer MLP, against the published PBP and
MC-dropout test log-likelihoods.

    pip install -e .
    FLOWPOST_DATA=../shared/data python examples/bnn_uci.py   # a few minutes on a CPU

The data come from $FLOWPOST_DATA (default ~/.cache/flowpost); a missing file is
downloaded from its public address and checked against its sha256.
"""

import jax
import numpy as np

import flowpost as fp


def main():
    data = fp.bnn.uci.load("yacht", split=0)  # 90/10 split, standardised by the training rows
    n_in = data.x_train.shape[1]
    print(f"yacht: {len(data.y_train)} training rows, {len(data.y_test)} test rows, {n_in} inputs")

    net = fp.bnn.mlp(jax.random.key(0), n_in=n_in, n_out=1, hidden=(50,))  # any Equinox module works
    model = fp.bnn.model(net, likelihood="gaussian", prior=1.0)  # the noise is learned
    print(f"theta: {model.dim} numbers ({model.n_weights} weights + the noise precision)")

    for family in ("meanfield", "subspace"):
        # full batches: the data are small, and the weight draws are then the only gradient noise
        result = fp.bnn.fit(
            model,
            data.x_train,
            data.y_train,
            family=family,
            epochs=2000,
            batch_size=len(data.y_train),
            num_samples=8,
            learning_rate=3e-3,
            key=jax.random.key(1),
        )
        thetas = result.sample(jax.random.key(2), 200)
        pred = fp.bnn.predict.regression(model, thetas, data.x_test, data.y_test, data.y_mean, data.y_std)
        print(f"{family:>9}: {result.status}, test RMSE {pred['rmse']:.3f}, test log-likelihood {pred['test_ll']:.3f}")

    inside = np.mean(np.abs(data.y_test - pred["mean"]) <= 2 * pred["sd"])
    print(f"subspace: {inside:.0%} of the test targets within 2 predictive sd")
    print("published (all 20 splits): PBP -1.63, MC dropout -1.25 test log-likelihood")


if __name__ == "__main__":
    main()
