"""Time and peak memory of FLIPAD on an SD-shaped VAE decoder, streamed or not.

The decoder is a diffusers ``AutoencoderKL`` with Stable Diffusion's channel
widths (128, 256, 512, 512), two layers per block, 32 norm groups and random
weights (built from a config: nothing is downloaded); its final layer
``decoder.conv_out`` (Conv2d 128 -> 3, 3x3) has 128 x S x S penultimate
activations for an S x S image.  Three steps, each measured in a fresh
subprocess (peak resident memory above the step's start, sampled every 5 ms):

* **anchor**: the mean penultimate activation over N latents;
  streamed = ``mean_activation(vae.decode, inputs=..., batch_size=B)``,
  not streamed = ``sample_activations`` of all N, then the mean;
* **inversion**: ``FinalLayerInverter.transform`` of the N images; streamed =
  ``StreamingFeatures(inverter)`` (no reduction steps) with ``batch_size=B``,
  not streamed = one ``transform`` of all N (all activations returned);
* **features**: inversion + centre crop (S/4) + 3 channels + G's scaler,
  ``fit_transform`` on N images (N/2 decodes of G, N/2 uniform noise images);
  streamed = ``StreamingFeatures`` (fit pass + transform pass: two
  inversions), not streamed = the same steps in a ``Pipeline`` (one).

Run: ``python -m benchmarks.bench_streaming [--n 8] [--size 64] [--batch 2]
[--max-iter 30] [--threads 2]``; prints a Markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from ._results import add_result_args, results_dir, write_result

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Peak resident memory above the value at entry, sampled in a thread."""

    def __enter__(self):
        self.start = _rss_mb()
        self.peak = self.start
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, _rss_mb())
                time.sleep(0.005)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.extra_mb = self.peak - self.start


def build_vae(size):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        norm_num_groups=32, sample_size=size).eval()


def latents(n, size, seed):
    import torch

    # stand-in for pipe(..., output_type="latent").images / scaling_factor
    return torch.randn(n, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))


def prepare(args, path):
    """Decode the images and the anchor once (not measured)."""
    import torch

    from flipad_sklearn import mean_activation

    vae = build_vae(args.size)
    n_g = args.n // 2
    with torch.no_grad():
        X_g = vae.decode(latents(n_g, args.size, 1)).sample.numpy()
    X_o = np.random.default_rng(0).uniform(-1, 1, size=(args.n - n_g,) + X_g.shape[1:])
    X = np.concatenate([X_g, X_o]).astype(np.float32)
    y = np.r_[np.ones(n_g), -np.ones(args.n - n_g)]
    anchor = mean_activation(vae.decode, inputs=latents(args.n, args.size, 0),
                             batch_size=args.batch, device="cpu")
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "y.npy"), y)
    np.save(os.path.join(path, "anchor.npy"), anchor)


def child(args, case, path):
    import warnings

    import torch
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import Pipeline

    from flipad_sklearn import (ActivationPooling, ChannelSelector, FinalLayerInverter,
                                GeneratorStandardScaler, StreamingFeatures,
                                mean_activation, sample_activations)

    warnings.simplefilter("ignore", ConvergenceWarning)
    torch.set_num_threads(args.threads)
    step, mode = case.split(":")
    streamed = mode == "streamed"
    vae = build_vae(args.size)
    layer = vae.decoder.conv_out
    c, s = layer.in_channels, args.size
    if step == "anchor":
        z = latents(args.n, args.size, 0)
        with PeakRSS() as m:
            if streamed:
                a = mean_activation(vae.decode, inputs=z, batch_size=args.batch,
                                    layer=layer, device="cpu")
            else:
                h = sample_activations(vae.decode, inputs=z, batch_size=args.n, layer=layer,
                                       device="cpu", return_outputs=False)
                a = h.mean(axis=0)
                del h
        assert a.size == c * s * s
        return m
    # streamed: the images stay on disk, one batch read at a time
    X = np.load(os.path.join(path, "X.npy"), mmap_mode="r" if streamed else None)
    y = np.load(os.path.join(path, "y.npy"))
    anchor = np.load(os.path.join(path, "anchor.npy"))
    inv = FinalLayerInverter(layer=layer, activation="identity", anchor=anchor,
                             max_iter=args.max_iter, device="cpu")
    crop = s // 4
    steps = [] if step == "inversion" else [
        ("crop", ActivationPooling((c, s, s), method="center_crop", crop_size=crop)),
        ("select", ChannelSelector(3, input_shape=(c, crop, crop))),
        ("scaler", GeneratorStandardScaler())]
    with PeakRSS() as m:
        if streamed:
            F = StreamingFeatures(inv, steps, batch_size=args.batch).fit_transform(X, y)
        elif steps:
            F = Pipeline([("inv", inv)] + steps).fit_transform(X, y)
        else:
            F = inv.fit(X).transform(X)
    assert F.shape[0] == args.n
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="images (and anchor latents)")
    p.add_argument("--size", type=int, default=64, help="output side S")
    p.add_argument("--batch", type=int, default=2, help="streaming batch size")
    p.add_argument("--max-iter", type=int, default=30,
                   help="lasso iterations (the inverter's default is 1000)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    add_result_args(p)
    args = p.parse_args(argv)
    if args.child:
        if args.child == "prepare":
            prepare(args, args.path)
            return
        m = child(args, args.child, args.path)
        print(json.dumps({"seconds": m.seconds, "extra_mb": m.extra_mb}))
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(HERE)] + [q for q in [env.get("PYTHONPATH")] if q])
    base = [sys.executable, "-m", "benchmarks.bench_streaming", "--n", str(args.n), "--size",
            str(args.size), "--batch", str(args.batch), "--max-iter", str(args.max_iter),
            "--threads", str(args.threads)]
    results = {}
    with tempfile.TemporaryDirectory() as path:
        subprocess.run(base + ["--child", "prepare", "--path", path], env=env, check=True)
        for step in ("anchor", "inversion", "features"):
            for mode in ("full", "streamed"):
                out = subprocess.run(base + ["--child", f"{step}:{mode}", "--path", path],
                                     env=env, check=True, capture_output=True, text=True)
                results[step, mode] = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{step:9s} {mode:8s} {results[step, mode]}", file=sys.stderr)
    text = table(args, results)
    print(text)
    print(f"written: {write_result('bench_streaming.md', text, results_dir=results_dir(args))}")


def table(args, results):
    """The Markdown table of the six child runs."""
    n_act = 128 * args.size ** 2
    lines = []
    lines.append(f"SD-shaped AutoencoderKL decoder (widths 128/256/512/512, random weights), "
                 f"{args.size}x{args.size} outputs ({n_act:,} penultimate activations, "
                 f"{n_act * 4 / 2**20:.1f} MB float32 per image), N = {args.n} images, "
                 f"streaming batch {args.batch}, inversion max_iter={args.max_iter} (NOT the "
                 f"default 1000), FISTA on CPU, {args.threads} threads. Peak memory = peak "
                 "resident memory above the step's start.\n")
    lines.append("| step | without streaming: s/image | peak MB | streamed: s/image | peak MB |")
    lines.append("|---|---:|---:|---:|---:|")
    for step, label in (("anchor", "anchor (mean activation)"),
                        ("inversion", "inversion (all activations)"),
                        ("features",
                         "features (inversion, crop, 3 channels, scaler; fit_transform)")):
        f, s = results[step, "full"], results[step, "streamed"]
        lines.append(f"| {label} | {f['seconds'] / args.n:.2f} | {f['extra_mb']:.0f} | "
                     f"{s['seconds'] / args.n:.2f} | {s['extra_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
