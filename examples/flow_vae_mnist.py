"""A flow-VAE on binarized MNIST: an encoder posterior refined by planar flows against a
plain Gaussian one, both trained briefly on part of the data, then scored by the test
-ELBO and an importance-sampled negative log-likelihood.

    pip install -e '.[plots]'
    FLOWPOST_DATA=../shared/data python examples/flow_vae_mnist.py   # a few minutes on a CPU

Runs are written to runs/examples/ (delete it to start again: a run folder that holds a
checkpoint is resumed, so Ctrl-C and re-running is safe).
"""

import jax

import flowpost as fp


def main():
    for flow in ("none", "planar"):
        config = fp.vae.TrainConfig(
            model=fp.vae.VAEConfig(flow=flow, arch="mlp", latent=16),
            dataset="mnist",
            epochs=10,
            warmup=5,  # KL warm-up over the first 5 epochs
            limit=2000,  # 2000 images of each split (the full protocol uses all 50000 for 2000 epochs)
        )
        out = f"runs/examples/vae-{flow}"
        result = fp.vae.train(config, out=out)
        print(
            f"{flow}: {result.status}, best validation -ELBO {result.best_valid:.2f} at epoch "
            f"{result.best_epoch}, {result.seconds_per_epoch:.2f} s per epoch"
        )
        scores = fp.vae.evaluate_run(out, samples=200, key=jax.random.key(0), limit=500)
        print(
            f"{flow}: test -ELBO {scores['neg_elbo']:.2f}, NLL {scores['nll']:.2f} nats per image "
            f"({out}/samples.png and reconstructions.png show what it learned)"
        )


if __name__ == "__main__":
    main()
