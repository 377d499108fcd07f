"""Seconds per 50,000-image epoch of the gated-conv flow-VAE (the Sylvester-flow paper's
protocol) for every posterior flow: how long the full 2000-epoch run takes on this device.

    python benchmarks/vae_gated_epoch.py     # env FLOWS=none,iaf and LIMIT=1000 narrow it;
                                             # writes $OUT/gated_epoch.json (default /tmp)
"""
import json
import os
import time

import jax
import flowpost as fp
import vae as V

limit = int(os.environ.get("LIMIT", "0")) or None
flows = os.environ.get("FLOWS", ",".join(fp.vae.FLOWS)).split(",")
data = fp.vae.load_data("mnist", limit=limit)
out = os.path.join(os.environ.get("OUT", "/tmp"), "gated_epoch.json")
res = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()], "images": int(len(data.train)), "flows": {}}
for flow in flows:
    cfg = fp.vae.TrainConfig(model=fp.vae.VAEConfig(flow=flow, arch="gated", latent=64))
    t0 = time.perf_counter()
    sec, comp = V.time_epochs(cfg, data, epochs=2)
    res["flows"][flow] = {"seconds_per_epoch": sec, "compile_seconds": comp, "wall": time.perf_counter() - t0}
    print(flow, f"{sec:.2f} s/epoch, compile {comp:.1f} s", flush=True)
    json.dump(res, open(out, "w"), indent=1)
