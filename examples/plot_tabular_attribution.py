"""
=====================================
Tabular attribution: wine-table GANs
=====================================

FLIPAD is not only for images.  Here ``G`` is a small KL-WGAN-style MLP
generator trained on the red Wine Quality table (11 physico-chemical
columns); its final layer is a ``nn.Linear`` without output activation
(``activation="identity"``).  We attribute rows: made by ``G``, or real
wines, or rows of another generator ``H`` of the same architecture.

The inversion works in standardised units (``G.standardize`` and
``G.standardized_final_layer()``): in data units, the columns with large
units (sulfur dioxide, in mg/l) would dominate the lasso's squared error.
With 11 outputs and 64 penultimate units the lasso is strongly
underdetermined: the penalty (and ``positive=True``, the penultimate layer
is a ReLU) is what makes the recovered activation informative.
:func:`~flipad_sklearn.pipeline.make_flipad_tabular` builds that pipeline
with the defaults of the tabular benchmark.
"""

# %%
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from flipad_sklearn import (
    ActivationMapDisplay,
    AttributionRocDisplay,
    ScoreHistogramDisplay,
    mean_activation,
)
from flipad_sklearn.datasets import load_wine_quality
from flipad_sklearn.generators import train_tabular_gan
from flipad_sklearn.pipeline import make_flipad_tabular

torch.set_num_threads(1)
warnings.simplefilter("ignore", ConvergenceWarning)
t0 = time.perf_counter()

wine = load_wine_quality()
X_real = wine.data[np.random.default_rng(0).permutation(len(wine.data))]
G = train_tabular_gan(X_real[:1200], epochs=30, seed=0, hidden_sizes=(64, 64),
                      critic_hidden_sizes=(64, 64))
H = train_tabular_gan(X_real[:1200], epochs=30, seed=1, hidden_sizes=(64, 64),
                      critic_hidden_sizes=(64, 64))
print(f"trained two tabular GANs in {time.perf_counter() - t0:.1f} s")

# %%
# Rows of each source, in G's standardised units
X_g = G.standardize(G.sample(900, random_state=10))
X_h = G.standardize(H.sample(400, random_state=11))
X_r = G.standardize(X_real[1200:1600])
X_train = np.concatenate([X_g[:600], X_r[:200], X_h[:200]])
y_train = np.r_[np.ones(600), -np.ones(400)].astype(int)

anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=0)
# the tabular recipe (benchmarks/attribution_tabular.py --ablation chose its defaults):
# G's standardised final layer, positive=True, Deep SAD with the paper's tabular MLP
pipe = make_flipad_tabular(G, anchor, fnr=0.05, random_state=0, device="cpu")
pipe.fit(X_train, y_train)

# %%
# Fresh rows of G, unseen real wines and unseen rows of H
X_test = np.concatenate([X_g[600:], X_r[200:], X_h[200:]])
source = np.array(["G"] * 300 + ["real"] * len(X_r[200:]) + ["H"] * 200)
Z_test = pipe["inv"].transform(X_test)
pred = pipe[1:].predict(Z_test)
for s in ("G", "real", "H"):
    print(f"{s:>4}: accepted as G: {np.mean(pred[source == s] == 1):.0%}")

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ScoreHistogramDisplay.from_estimator(pipe[1:], Z_test, source, ax=axes[0])
AttributionRocDisplay.from_estimator(pipe[1:], Z_test, source, pos_label="G", ax=axes[1])
fig.tight_layout()

# %%
# The mean recovered activation of each source (64 units, one strip each)
ActivationMapDisplay.from_predictions(Z_test, source, figsize=(9, 2.5))
print(f"total {time.perf_counter() - t0:.1f} s")
plt.show()
