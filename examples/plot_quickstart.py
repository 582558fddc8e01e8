"""
===========================================
Quick start: was this image made by my GAN?
===========================================

We train two tiny GANs on a few hundred MNIST digits: ``G``, *our* generator,
and ``H``, somebody else's (same architecture, other seed).  Then we fit
FLIPAD on samples of ``G`` (label 1) against real digits and samples of ``H``
(label -1), and check on fresh samples that it tells them apart.

FLIPAD inverts ``G``'s final layer (a lasso per image, see the user guide),
pools the recovered activations, standardises them with ``G``'s own
statistics and runs a Deep SAD one-class detector on them: the recipe of
:func:`flipad_sklearn.pipeline.make_flipad`.  Everything is small so that the
example runs on a CPU in well under two minutes.
"""

# %%
# Data and two generators
# -----------------------
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from flipad_sklearn import (
    ActivationMapDisplay,
    AttributionRocDisplay,
    ScoreHistogramDisplay,
    mean_activation,
)
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import train_gan
from flipad_sklearn.pipeline import make_flipad

torch.set_num_threads(1)
t0 = time.perf_counter()

X_real, _ = load_mnist_subset(return_X_y=True)
X_real = X_real[np.random.default_rng(0).permutation(len(X_real))[:800]]

G = train_gan("dcgan", X_real[:600], epochs=2, seed=0, ngf=8, latent_dim=16)
H = train_gan("dcgan", X_real[:600], epochs=2, seed=1, ngf=8, latent_dim=16)
print(f"trained two generators in {time.perf_counter() - t0:.1f} s")

# %%
# Training data: y = 1 for G's samples, -1 for everything known not to be G's
X_g = G.sample(500, random_state=10)
X_h = H.sample(200, random_state=11)
X_train = np.concatenate([X_g[:400], X_real[600:700], X_h[:100]])
y_train = np.r_[np.ones(400), -np.ones(200)].astype(int)

# %%
# The FLIPAD pipeline
# -------------------
# The anchor is the mean penultimate activation of G.  Its final layer is a
# ConvTranspose2d after a ReLU, hence ``positive=True``.
anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=0)
pipe = make_flipad(G.final_layer, "tanh", anchor, alpha=5e-4, positive=True, fnr=0.05,
                   random_state=0, device="cpu", detector_params=dict(n_epochs=30))
pipe.fit(X_train, y_train)
print(f"fitted in {time.perf_counter() - t0:.1f} s; threshold {pipe[-1].threshold_:.3g}")

# %%
# Attribution of fresh samples
# ----------------------------
# Fresh samples of G, real digits never seen, and samples of H.
X_test = np.concatenate([X_g[400:], X_real[700:800], X_h[100:]])
source = np.array(["G"] * 100 + ["real"] * 100 + ["H"] * 100)
# ``pipe.predict(X_test)`` would do; we keep the recovered activations for
# the plots below, and run the rest of the pipeline on them.  ``pipe[:1]``
# (not ``pipe["inv"]``) keeps the pipeline's input contract: like every input,
# the test images are first rounded to 8 bits, as the training images were.
Z_test = pipe[:1].transform(X_test)
pred = pipe[1:].predict(Z_test)
for s in ("G", "real", "H"):
    print(f"{s:>4}: accepted as G: {np.mean(pred[source == s] == 1):.0%}")

# %%
# Scores per source, with the threshold at fnr = 0.05
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ScoreHistogramDisplay.from_estimator(pipe[1:], Z_test, source, ax=axes[0], xscale="symlog")
AttributionRocDisplay.from_estimator(pipe[1:], Z_test, source, pos_label="G", ax=axes[1])
fig.tight_layout()

# %%
# What the inversion recovers
# ---------------------------
# The mean recovered activation (averaged over channels) per source: the
# recovered activations of G's own images have G's typical pattern.
# (``ActivationMapDisplay.from_estimator(pipe, X_test, source)`` inverts again.)
ActivationMapDisplay.from_predictions(Z_test, source,
                                      activation_shape=pipe["inv"].activation_shape_)
print(f"total {time.perf_counter() - t0:.1f} s")
plt.show()
