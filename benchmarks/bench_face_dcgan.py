"""FLIPAD on a published generator, as its owner would use it (issue 32, item 0).

G is the trained face DCGAN of the PyPI wheel ``gan-face-generate`` (64x64 RGB
faces, the FLIPAD authors' DCGAN architecture; install it with ``--no-deps``).
The README's recipe at its defaults (:func:`~flipad_sklearn.find_final_layer`,
:func:`~flipad_sklearn.mean_activation`, :func:`~flipad_sklearn.make_flipad`
with ``fnr=0.005``) is fitted on ``--n-own`` samples of G against
``--n-others`` samples of a competitor: a copy of G's architecture trained on
G's samples (:func:`~flipad_sklearn.generators.train_shadows`, the user path).
Test sources, ``--n-test`` samples each, none seen in training:

* fresh samples of G (share accepted);
* same architecture trained on G's samples, an unseen seed;
* an upsample + ``Conv2d`` generator trained on G's samples;
* another image domain: the demo's MNIST DCGAN, resized to 64x64 (bilinear),
  grey to RGB;
* G's own samples after JPEG at quality 90 (share accepted).

The generators trained here see ``--train-samples`` samples of G for
``--epochs`` epochs: a CPU budget, far from converged models (see the
result file's notes).  Writes ``--out`` (markdown) with accuracy at fnr
0.005 and ROC AUC per source, the commit, threads, device and date.

Run: ``python -m benchmarks.bench_face_dcgan`` (defaults: 400 own, 200
others, 100 test samples per source, competitors trained on ``TRAIN_SAMPLES``
samples of G for ``TRAIN_EPOCHS`` epochs at batch ``TRAIN_BATCH``, one thread).
The trained generators are cached in ``--cache-dir``, shared with
``bench_open_world_face`` (the same seeds and recipe): about 40 minutes of
training on one thread the first time, then a few minutes.  The result file
records the run's times.
"""

import argparse
import copy
import hashlib
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from flipad_sklearn import (
    JPEGCompression, find_final_layer, make_flipad, mean_activation,
)
from flipad_sklearn.generators import (
    PixelShuffleGenerator, UpsampleConvGenerator, final_layer_variant, load_demo_generator,
    train_shadows,
)

from ._results import add_result_args, results_dir, write_result
from .train_zoo import DEFAULT_CACHE


HERE = os.path.dirname(os.path.abspath(__file__))
LATENT = (100, 1, 1)


def load_face_dcgan():
    import gan_face_generate
    from gan_face_generate.models import Generator

    G = Generator(0, 3, 100, 64)
    path = os.path.join(os.path.dirname(gan_face_generate.__file__), "weights.tar")
    G.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"])
    return G.eval()


class KernelThreeGenerator(nn.Module):
    """Transposed convolutions of kernel 3 (stride 2, padding 1, output padding 1) x 4.

    G's layout (a 4x4 transposed convolution from the latent, then four
    doublings) with another kernel: a 3x3 kernel at stride 2 overlaps
    unevenly (one phase of each output row gets one tap, the other two),
    where G's 4x4 kernel gives every phase two.
    """

    def __init__(self, width=64):
        super().__init__()
        c = 8 * width
        layers = [nn.ConvTranspose2d(100, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c),
                  nn.ReLU(True)]
        for _ in range(3):
            layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, 3, 3, 2, 1, output_padding=1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z.reshape(z.shape[0], -1, 1, 1))


class HybridGenerator(nn.Module):
    """G's transposed convolutions up to 32x32, then nearest upsampling x2 + 3x3 ``Conv2d``.

    Only the last doubling repeats pixels: the layer FLIPAD inverts and the
    one that leaves a generator's spectral traces are those of the
    upsample + conv family, the rest is G's.
    """

    def __init__(self, width=64):
        super().__init__()
        c = 8 * width
        layers = [nn.ConvTranspose2d(100, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c),
                  nn.ReLU(True)]
        for _ in range(3):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, 3, 3, 1, 1),
                   nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z.reshape(z.shape[0], -1, 1, 1))


def middle_nearest(G):
    """G's architecture with its fourth doubling (128 -> 64 channels, 16x16 -> 32x32) made
    nearest upsampling + 3x3 ``Conv2d``; the final layer stays G's transposed convolution."""
    variant = copy.deepcopy(G)
    variant.main[9] = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                    nn.Conv2d(128, 64, 3, 1, 1, bias=False))
    return variant


def last_layer(G, layer):
    """G's architecture with ``layer`` as its final layer (G's is ``main[12]``, 64 -> 3
    channels, 32x32 -> 64x64)."""
    variant = copy.deepcopy(G)
    variant.main[12] = layer
    return variant


class SkipToRGB(nn.Module):
    """A StyleGAN2-like skip output: the 32x32 features' colours, upsampled bilinearly,
    plus G's kind of transposed convolution (its output, 64x64, is added)."""

    def __init__(self, c_in=64):
        super().__init__()
        self.to_rgb = nn.Conv2d(c_in, 3, 1)
        self.detail = nn.ConvTranspose2d(c_in, 3, 4, 2, 1, bias=False)

    def forward(self, h):
        low = F.interpolate(self.to_rgb(h), scale_factor=2, mode="bilinear",
                            align_corners=False)
        return low + self.detail(h)


class FixedBlur(nn.Module):
    """A fixed binomial low-pass, [1, 2, 1] x [1, 2, 1] / 16 per channel (StyleGAN's blur
    after upsampling), reflection-padded; no parameters."""

    def __init__(self, channels=3):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(
            channels, 1, 3, 3).contiguous())

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel,
                        groups=x.shape[1])


#: a batch of latents to find G's final layer with
_Z = torch.zeros((4,) + LATENT)
#: the other generators' architectures, by the name their cached weights carry
ARCHITECTURES = {"dcgan": copy.deepcopy, "upconv": lambda G: UpsampleConvGenerator(),
                 "upbilin": lambda G: UpsampleConvGenerator(mode="bilinear"),
                 "pixshuf": lambda G: PixelShuffleGenerator(),
                 "tconv3": lambda G: KernelThreeGenerator(),
                 "hybrid": lambda G: HybridGenerator(),
                 "hybrid48": lambda G: HybridGenerator(width=48),
                 "var_nearest": lambda G: final_layer_variant(G, _Z, "nearest"),
                 "var_bilinear": lambda G: final_layer_variant(G, _Z, "bilinear"),
                 "var_pixshuf": lambda G: final_layer_variant(G, _Z, "pixel_shuffle"),
                 "mid_nearest": middle_nearest,
                 "last_bicubic": lambda G: last_layer(G, nn.Sequential(
                     nn.Upsample(scale_factor=2, mode="bicubic"), nn.Conv2d(64, 3, 3, 1, 1))),
                 "last_tconv3": lambda G: last_layer(
                     G, nn.ConvTranspose2d(64, 3, 3, 2, 1, output_padding=1, bias=False)),
                 "last_tconv2": lambda G: last_layer(
                     G, nn.ConvTranspose2d(64, 3, 2, 2, 0, bias=False)),
                 "last_near5": lambda G: last_layer(G, nn.Sequential(
                     nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(64, 3, 5, 1, 2))),
                 # the fourth blind test's final layers (bench_face_blind_one_call)
                 "last_refine": lambda G: last_layer(G, nn.Sequential(
                     nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32),
                     nn.ReLU(True), nn.Conv2d(32, 3, 3, 1, 1))),
                 "last_supersample": lambda G: last_layer(G, nn.Sequential(
                     nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32),
                     nn.ReLU(True), nn.ConvTranspose2d(32, 3, 4, 2, 1), nn.AvgPool2d(2))),
                 "last_skip": lambda G: last_layer(G, SkipToRGB()),
                 "last_blur": lambda G: last_layer(G, nn.Sequential(
                     nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), FixedBlur()))}


def sample(G, n, seed, batch=100):
    rng = np.random.default_rng(seed)
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            z = torch.from_numpy(rng.standard_normal((min(batch, n - start),) + LATENT,
                                                     dtype=np.float32))
            out.append(G(z).numpy())
    return np.concatenate(out)


def other_domain(n, seed):
    digits = load_demo_generator("G").sample(n, random_state=seed)
    x = F.interpolate(torch.from_numpy(digits), size=(64, 64), mode="bilinear",
                      align_corners=False)
    return x.clamp(-1, 1).repeat(1, 3, 1, 1).numpy()


#: how the other generators are trained on G's samples (train_shadows, the user path):
#: 372 Adam steps (2000 // 32 batches, 6 epochs), about 9 minutes for G's architecture
#: on one thread, a CPU budget.
#: The first defaults (500 samples, 2 epochs at batch 64: 14 steps) left them
#: emitting noise (static in a sample grid).
TRAIN_SAMPLES, TRAIN_EPOCHS, TRAIN_BATCH = 2000, 6, 32
#: where the face benchmarks keep what they train (shared with bench_open_world_face)
FACE_CACHE = os.path.join(DEFAULT_CACHE, "face_open_world")
#: the other generators every face benchmark uses: (name, architecture, training seed)
FACE_OTHERS = (("comp", "dcgan", 11), ("unseen", "dcgan", 12), ("upconv", "upconv", 13))


def weights_file(name, arch, seed, *, n_samples=TRAIN_SAMPLES, epochs=TRAIN_EPOCHS,
                 batch_size=TRAIN_BATCH, init="dcgan"):
    """The cache's file name of a generator trained by :func:`trained_other`."""
    tail = "" if init == "dcgan" else f"_{init}"
    return f"{name}_{arch}_seed{seed}_n{n_samples}_e{epochs}_b{batch_size}{tail}.pt"


def weights_fingerprints(cache, others, **recipe):
    """``{file: first 12 hex of the sha256 of its weights}`` for the ``others`` in ``cache``.

    ``others`` holds ``(name, arch, seed)`` of :func:`trained_other`, trained
    with ``recipe`` (its keyword arguments; default: the face benchmarks'); a
    generator not trained yet maps to ``None``.  Result
    files print these, and caches of samples store them, so that a number
    can be traced to the trained generators behind it: the others' training
    is seeded but, on a CPU, not bit-identical across machines.
    """
    out = {}
    for spec in others:
        name = weights_file(*spec, **recipe)
        path = os.path.join(cache, name)
        if not os.path.exists(path):
            out[name] = None
            continue
        out[name] = state_fingerprint(path)
    return out


def state_fingerprint(path):
    """The first 12 hex of the sha256 of the tensors of the state dict saved at ``path``."""
    # the tensors, not the file: the archive's own bytes are not the weights
    state = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def fingerprint_note(cache, others, **recipe):
    """The result files' paragraph naming the trained generators behind their numbers."""
    prints = weights_fingerprints(cache, others, **recipe) if cache else {}
    return ("\nThe trained generators behind these numbers (fingerprints of their weights; "
            "GAN training on a CPU is not bit-identical across machines, so a cache trained "
            "elsewhere gives other numbers):\n\n"
            + "\n".join(f"- {name}: {digest}" for name, digest in sorted(prints.items())))


def trained_other(G, name, arch, seed, cache, *, n_samples=TRAIN_SAMPLES,
                  epochs=TRAIN_EPOCHS, batch_size=TRAIN_BATCH, init="dcgan", log=print):
    """A generator trained on G's samples with ``train_shadows`` (the user path).

    ``arch`` is ``"dcgan"`` (G's architecture, from scratch), ``"upconv"``
    (:class:`~flipad_sklearn.generators.UpsampleConvGenerator`; ``"upbilin"``
    with bilinear upsampling),
    ``"pixshuf"`` (:class:`~flipad_sklearn.generators.PixelShuffleGenerator`), ``"tconv3"``
    (:class:`KernelThreeGenerator`) or ``"hybrid"`` (:class:`HybridGenerator`);
    ``init`` is ``train_shadows``'; the training set is ``n_samples``
    samples of G (seed 1).  The weights are cached in ``cache`` under a name
    that carries the source, architecture, seed and recipe, so the face
    benchmarks train each generator once between them.
    """
    gen = ARCHITECTURES[arch](G)
    path = None if cache is None else os.path.join(cache, weights_file(
        name, arch, seed, n_samples=n_samples, epochs=epochs, batch_size=batch_size,
        init=init))
    if path is not None and os.path.exists(path):
        gen.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return gen.eval()
    log(f"training {name} ({arch}, seed {seed}) on {n_samples} samples of G, "
        f"{epochs} epochs, batch {batch_size}, init {init}")
    (gen,) = train_shadows(gen, sample(G, n_samples, seed=1), seeds=[seed],
                           latent_shape=LATENT, epochs=epochs, batch_size=batch_size,
                           init=init)
    if path is not None:
        os.makedirs(cache, exist_ok=True)
        torch.save(gen.state_dict(), path)
    return gen.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-own", type=int, default=400)
    p.add_argument("--n-others", type=int, default=200)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES)
    p.add_argument("--epochs", type=int, default=TRAIN_EPOCHS)
    p.add_argument("--batch-size", type=int, default=TRAIN_BATCH)
    p.add_argument("--n-anchor", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=FACE_CACHE,
                   help="trained generators' weights (shared with bench_open_world_face); "
                        "'' trains afresh")
    p.add_argument("--out", default="face_dcgan.md",
                   help="the result file's name in --results-dir (or a path)")
    add_result_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    t0 = time.time()

    G = load_face_dcgan()
    recipe = dict(n_samples=args.train_samples, epochs=args.epochs,
                  batch_size=args.batch_size)
    competitor, unseen, upconv = (
        trained_other(G, name, arch, seed, args.cache_dir or None, **recipe)
        for name, arch, seed in FACE_OTHERS)
    t_train = time.time() - t0

    z = torch.from_numpy(np.random.default_rng(2).standard_normal((4,) + LATENT,
                                                                  dtype=np.float32))
    final = find_final_layer(G, z)
    anchor = mean_activation(G, args.n_anchor, LATENT, random_state=3, device="cpu")
    pipe = make_flipad(final.layer, final.activation, anchor, fnr=0.005, random_state=0,
                       device="cpu")
    X_own, X_others = sample(G, args.n_own, seed=4), sample(competitor, args.n_others, seed=5)
    fresh = sample(G, args.n_test, seed=6)
    tests = {
        "G, fresh samples": fresh,
        "same architecture, trained on G's samples, unseen seed": sample(unseen, args.n_test, 7),
        "upsample + conv generator trained on G's samples": sample(upconv, args.n_test, 8),
        "another domain (MNIST DCGAN resized to 64x64)": other_domain(args.n_test, 9),
        "G's own samples after JPEG q90": JPEGCompression(quality=90).fit_transform(fresh),
    }
    t1 = time.time()
    pipe.fit(np.concatenate([X_own, X_others]),
             np.r_[np.ones(len(X_own)), -np.ones(len(X_others))])
    t_fit = time.time() - t1
    t1 = time.time()
    scores = {k: pipe.decision_function(v) for k, v in tests.items()}
    t_score = time.time() - t1
    g = scores["G, fresh samples"]
    rows = []
    for k, s in scores.items():
        if k.startswith("G"):
            rows.append((k, f"accepted {np.mean(s >= 0):.3f}"))
        else:
            acc = 0.5 * (np.mean(g >= 0) + np.mean(s < 0))
            auc = roc_auc_score(np.r_[np.ones(g.size), np.zeros(s.size)], np.r_[g, s])
            rows.append((k, f"{acc:.3f} / {auc:.3f}"))
        print(rows[-1], flush=True)
    det = pipe[-1]
    lines = [
        f"<!-- python -m benchmarks.bench_face_dcgan --n-own {args.n_own} --n-others "
        f"{args.n_others} --n-test {args.n_test} --train-samples {args.train_samples} "
        f"--epochs {args.epochs} --n-anchor {args.n_anchor} --threads {args.threads}; "
        f"device cpu, torch threads {args.threads}; "
        f"training (or loading from --cache-dir) the "
        f"three other generators {t_train:.0f} s, fit {t_fit:.0f} s "
        f"({t_fit / (args.n_own + args.n_others):.2f} s/sample), scoring {t_score:.0f} s "
        f"({t_score / sum(len(v) for v in tests.values()):.2f} s/sample) -->",
        "# The published face DCGAN (gan-face-generate), make_flipad at its defaults",
        "",
        f"{args.n_own} samples of G against {args.n_others} of a copy of G's architecture "
        f"trained on {args.train_samples} samples of G for {args.epochs} epochs; "
        f"{args.n_test} test samples per source. Detector: combine_ = {det.combine_!r}, "
        f"{det.validation_scores_.size} held-out samples of G.",
        "",
        "| test source | accuracy at fnr 0.005 / AUC |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        fingerprint_note(args.cache_dir, FACE_OTHERS, **recipe),
    ]
    text = "\n".join(lines)
    print(text)
    print(f"written: {write_result(args.out, text, results_dir=results_dir(args))}")


if __name__ == "__main__":
    main()
