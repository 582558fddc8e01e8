"""
==========================================================
Open world: FLIPAD and a pixel guard in one verdict
==========================================================

FLIPAD's detector learns what separates ``G`` from the labelled others it
was shown; a source unlike both can pass it (on the published face DCGAN,
digits resized to 64x64 did: see :ref:`open-world`).
:class:`~flipad_sklearn.ConformalUnion` adds detectors that look elsewhere,
here :func:`~flipad_sklearn.make_pixel_guard` (a Gaussian of ``G``'s
downsampled pixels, fitted on ``G`` alone), and accepts a sample as ``G``'s
only when every detector accepts it.  Each keeps its own conformal
threshold at a share of the false-negative rate, so the union's guarantee is
the sum of the shares.

``G`` is the demo's DCGAN on digits.  The test sources: fresh samples of
``G``, real digits, two generators never seen in training, and two sources of
other domains (``G``'s digits turned by 90 degrees; smooth random blobs).
The plot shows each test sample's p-value under each detector.  On these
digits FLIPAD alone already rejects every other source; the guard rejects
the far ones too (other domains, real digits) and costs its share of fnr.
Where FLIPAD's features cannot tell another domain from ``G`` (the face
DCGAN), the guard is what rejects it.
"""

# %%
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from flipad_sklearn import ConformalUnion, make_pixel_guard, mean_activation
from flipad_sklearn.datasets import load_mnist_subset
from flipad_sklearn.generators._demo_checkpoints import load_demo_generator
from flipad_sklearn.pipeline import make_flipad

torch.set_num_threads(1)
t0 = time.perf_counter()
gens = {name: load_demo_generator(name) for name in ("G", "shadow", "unseen", "other")}
G = gens["G"]
X_real, _ = load_mnist_subset(return_X_y=True)
X_real = X_real[np.random.default_rng(0).permutation(len(X_real))]
X_own = G.sample(500, random_state=100)
X_train = np.concatenate([X_own[:400], X_real[:150],
                          gens["shadow"].sample(150, random_state=101)])
y_train = np.r_[np.ones(400), -np.ones(300)].astype(int)

blobs = gaussian_filter(np.random.default_rng(7).normal(size=(100, 1, 28, 28)),
                        sigma=(0, 0, 3, 3))
tests = {
    "G": X_own[400:],
    "real digits": X_real[150:250],
    "unseen DCGAN": gens["unseen"].sample(100, random_state=102),
    "unseen LSGAN": gens["other"].sample(100, random_state=103),
    "G's digits turned 90°": np.rot90(G.sample(100, random_state=104), axes=(2, 3)).copy(),
    "smooth blobs": np.tanh(blobs / blobs.std() * 2).astype(np.float32),
}

# %%
# The union: FLIPAD gets 80 % of fnr, the pixel guard (which needs no
# inversion, so many fresh samples of G calibrate it cheaply) 20 %.
anchor = mean_activation(G, 2000, G.latent_shape, layer=G.final_layer, random_state=0)
flipad = make_flipad(G.final_layer, "tanh", anchor, positive=True, random_state=0,
                     device="cpu", detector_params=dict(n_epochs=40, validation_fraction=0.5))
union = ConformalUnion([("flipad", flipad),
                        ("pixels", make_pixel_guard(G.output_shape, size=8, random_state=0))],
                       fnr=0.005, weights={"flipad": 0.8, "pixels": 0.2})
with warnings.catch_warnings():
    warnings.simplefilter("ignore")          # the inversion's budget warnings
    union.fit(X_train, y_train)
# the pixel guard's share (0.001) needs 999 held-out samples of G: draw them
union.calibrate(lambda n: G.sample(n, random_state=200), detectors=["pixels"])
print(f"union fnr bound {union.fnr_bound_:.4f} (FLIPAD's + the guard's); "
      f"fitted in {time.perf_counter() - t0:.0f} s")

# %%
# Who rejects what: each detector at its own threshold, and the union.
bounds = np.array([det[-1].fnr_bound_ for _, det in union.estimators_])
pvalues = {name: union.pvalues(X, per_detector=True) for name, X in tests.items()}
print(f"{'source':<24} {'FLIPAD':>8} {'pixels':>8} {'union':>8}   (share rejected)")
for name, P in pvalues.items():
    rejected = P <= bounds
    print(f"{name:<24} {rejected[:, 0].mean():8.2f} {rejected[:, 1].mean():8.2f} "
          f"{rejected.any(axis=1).mean():8.2f}")

# %%
# The p-values side by side (log scale): a sample is accepted only in the
# upper right corner, above both thresholds (dashed).
fig, ax = plt.subplots(figsize=(7, 5.5), layout="constrained")
colours = plt.get_cmap("tab10")
floor = 1e-4
for i, (name, P) in enumerate(pvalues.items()):
    ax.scatter(np.maximum(P[:, 0], floor), np.maximum(P[:, 1], floor), s=12, alpha=0.7,
               color=colours(i), label=name)
ax.axvline(bounds[0], color="k", ls="--", lw=1)
ax.axhline(bounds[1], color="k", ls="--", lw=1)
ax.set(xscale="log", yscale="log", xlabel="p-value under FLIPAD",
       ylabel="p-value under the pixel guard",
       title="Accepted only above both thresholds (dashed)")
ax.legend(loc="lower right", fontsize=8)
plt.show()
print(f"{time.perf_counter() - t0:.0f} s in all")
