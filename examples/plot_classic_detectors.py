"""
==========================================================
FLIPAD features under classic one-class detectors
==========================================================

The recovered activations are ordinary features: any scikit-learn outlier
detector can follow the inversion in a pipeline.  Here Isolation Forest, a
one-class SVM and the local outlier factor (all trained on ``G``'s samples
only) are compared with Deep SAD (:class:`~flipad_sklearn.FLIPADDetector`,
trained with the labelled others too, and one-class) on the same features,
and with the same detectors on raw pixels.

The inversion is the expensive step, so the features are computed once
(``pipe[:-1]`` of a fitted pipeline would do the same).
"""

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from flipad_sklearn import FLIPADDetector, mean_activation
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators import train_gan
from flipad_sklearn.pipeline import make_flipad

torch.set_num_threads(1)
t0 = time.perf_counter()

X_real, _ = load_mnist_subset(return_X_y=True)
X_real = X_real[np.random.default_rng(0).permutation(len(X_real))[:800]]
G = train_gan("dcgan", X_real[:600], epochs=2, seed=0, ngf=8, latent_dim=16)
H = train_gan("dcgan", X_real[:600], epochs=2, seed=1, ngf=8, latent_dim=16)
anchor = mean_activation(G, 1000, G.latent_shape, layer=G.final_layer, random_state=0)

X_g, X_h = G.sample(400, random_state=10), H.sample(200, random_state=11)
X_train = np.concatenate([X_g[:300], X_real[600:700], X_h[:100]])
y_train = np.r_[np.ones(300), -np.ones(200)].astype(int)
X_test = np.concatenate([X_g[300:], X_real[700:800], X_h[100:]])
y_test = np.r_[np.ones(100), -np.ones(200)].astype(int)
source_test = np.array(["G"] * 100 + ["real"] * 100 + ["H"] * 100)

# %%
# FLIPAD features: the FLIPAD pipeline without its detector (inversion,
# pooling, channel selection, standardisation with G's statistics)
features = make_flipad(G.final_layer, "tanh", anchor, alpha=5e-4, positive=True,
                       device="cpu")[:-1]
F_train = features.fit_transform(X_train, y_train)
F_test = features.transform(X_test)
print(f"features {F_train.shape[1]} per image, computed in {time.perf_counter() - t0:.1f} s")

# %%
# Detectors.  The classic ones are one-class: they see G's samples only.
# Their scores follow scikit-learn's convention (higher = more normal = more
# like G), as FLIPADDetector's do.
own = y_train == 1
detectors = {
    "Deep SAD (with others)": lambda: FLIPADDetector(fnr=0.05, n_epochs=30, random_state=0,
                                                     device="cpu"),
    "Deep SAD (one-class)": lambda: FLIPADDetector(fnr=0.05, n_epochs=30, random_state=0,
                                                   device="cpu"),
    "Isolation Forest": lambda: IsolationForest(random_state=0),
    "one-class SVM": lambda: OneClassSVM(nu=0.05, gamma="scale"),
    "LOF": lambda: LocalOutlierFactor(n_neighbors=20, novelty=True),
}
P_train = X_train.reshape(len(X_train), -1)
P_test = X_test.reshape(len(X_test), -1)
auc = {}
for name, make in detectors.items():
    row = []
    for Xtr, Xte in ((F_train, F_test), (P_train, P_test)):
        det = make()
        if name == "Deep SAD (with others)":
            det.fit(Xtr, y_train)
        else:
            # raw pixels: standardise for the SVM / LOF distances
            det = make_pipeline(StandardScaler(), det) if Xtr is P_train else det
            det.fit(Xtr[own])
        row.append(roc_auc_score(y_test, det.decision_function(Xte)))
    auc[name] = row
    print(f"{name:>24}: ROC AUC on FLIPAD features {row[0]:.3f}, on raw pixels {row[1]:.3f}")

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
pos = np.arange(len(auc))
ax.barh(pos + 0.2, [v[0] for v in auc.values()], 0.4, label="FLIPAD features")
ax.barh(pos - 0.2, [v[1] for v in auc.values()], 0.4, label="raw pixels")
ax.set_yticks(pos, list(auc))
ax.set_xlim(0.3, 1.0)
ax.set_xlabel("ROC AUC: G vs real + H (held out)")
ax.legend(loc="lower right")
fig.tight_layout()
print(f"total {time.perf_counter() - t0:.1f} s")
plt.show()

# %%
# With generators this small and this briefly trained, G's images are easy
# to tell from real digits and from H's for most detectors; the differences
# between features and detectors grow with better generators (see the
# benchmarks and the FLIPAD paper).  Note that one-class Deep SAD needs the
# labelled others (or shadow generators) to be reliable: the semi-supervised
# loss pushes them away from the centre.
