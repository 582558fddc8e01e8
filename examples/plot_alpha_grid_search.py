"""
===========================================
Choosing alpha: sparsity, fit and accuracy
===========================================

The lasso penalty ``alpha`` of :class:`~flipad_sklearn.FinalLayerInverter`
trades how well the recovered activation reproduces the image (the squared
error) against how close it stays to the anchor (the L1 distance).  Too
small, and the inversion of an image not made by ``G`` fits it anyway; too
large, and every image is pulled onto the anchor.

This example first shows, for a handful of images, how the objective, the
reconstruction error and the sparsity of ``z - anchor`` change with alpha,
then picks alpha by cross-validated ROC AUC with
:class:`~sklearn.model_selection.GridSearchCV`, using
:class:`~flipad_sklearn.LabelStratifiedKFold` (every fold holds G's images and
others) and :func:`~flipad_sklearn.labelled_roc_auc` (the ROC AUC of the
labelled images of a fold; unlabelled ones, ``y = 0``, would be a third class
for ``scoring="roc_auc"``).
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.model_selection import GridSearchCV

from flipad_sklearn import (
    FinalLayerInverter,
    mean_activation,
)
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.model_selection import LabelStratifiedKFold, labelled_roc_auc
from flipad_sklearn.generators import train_gan
from flipad_sklearn.pipeline import make_flipad

torch.set_num_threads(1)
t0 = time.perf_counter()

X_real, _ = load_mnist_subset(return_X_y=True)
X_real = X_real[np.random.default_rng(0).permutation(len(X_real))[:700]]
G = train_gan("dcgan", X_real[:600], epochs=1, seed=0, ngf=8, latent_dim=16)
H = train_gan("dcgan", X_real[:600], epochs=1, seed=1, ngf=8, latent_dim=16)
anchor = mean_activation(G, 1000, G.latent_shape, layer=G.final_layer, random_state=0)

# %%
# The lasso path on a few images
# ------------------------------
# ``objective_`` is the lasso objective of each sample, the reconstruction
# error is ``1/2 ||y - W z||^2`` (in pre-activation space) and the sparsity
# is the share of activations left exactly at the anchor.
alphas = [1e-4, 5e-4, 2e-3, 1e-2, 5e-2]
X_few = np.concatenate([G.sample(20, random_state=1), X_real[600:620]])
few_source = np.r_[np.ones(20), -np.ones(20)]
rows = []
for alpha in alphas:
    inv = FinalLayerInverter(layer=G.final_layer, alpha=alpha, anchor=anchor, positive=True,
                             device="cpu").fit(X_few)
    Z = inv.transform(X_few)
    at_anchor = np.isclose(Z, inv.anchor_, atol=1e-7).mean(axis=1)
    l1 = np.abs(Z - inv.anchor_).sum(axis=1)
    fit_err = inv.objective_ - alpha * l1
    rows.append((inv.objective_, fit_err, at_anchor))

fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
for k, title in enumerate(["lasso objective", "reconstruction error",
                           "share of activations at the anchor"]):
    for lab, name in ((1, "G"), (-1, "real")):
        axes[k].plot(alphas, [r[k][few_source == lab].mean() for r in rows], "o-",
                     label=name)
    axes[k].set_xscale("log")
    axes[k].set_xlabel("alpha")
    axes[k].set_title(title)
axes[0].legend()
fig.tight_layout()

# %%
# Cross-validated choice of alpha
# -------------------------------
# G's samples (y = 1) against real digits and H's samples (y = -1).
X = np.concatenate([G.sample(120, random_state=2), X_real[620:680], H.sample(60, random_state=3)])
y = np.r_[np.ones(120), -np.ones(120)].astype(int)
pipe = make_flipad(G.final_layer, "tanh", anchor, positive=True,
                   fnr=0.1, random_state=0, device="cpu", detector_params=dict(n_epochs=15))
search = GridSearchCV(pipe, {"inv__alpha": [1e-4, 1e-3, 1e-2]}, scoring=labelled_roc_auc,
                      cv=LabelStratifiedKFold(2, shuffle=True, random_state=0), refit=False)
search.fit(X, y)
res = search.cv_results_
for a, m, s in zip(res["param_inv__alpha"], res["mean_test_score"], res["std_test_score"]):
    print(f"alpha={a:g}: ROC AUC {m:.3f} +- {s:.3f}")
print(f"best alpha: {search.best_params_['inv__alpha']:g}")

fig, ax = plt.subplots(figsize=(4.5, 3.5))
ax.errorbar(np.asarray(res["param_inv__alpha"], float), res["mean_test_score"],
            yerr=res["std_test_score"], marker="o", capsize=3)
ax.set_xscale("log")
ax.set_xlabel("alpha")
ax.set_ylabel("cross-validated ROC AUC")
fig.tight_layout()
print(f"total {time.perf_counter() - t0:.1f} s")
plt.show()
