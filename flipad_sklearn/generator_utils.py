"""Helpers to take a torch generator apart: its final layer, output activation
and penultimate activations (for the anchor).

They work with ``nn.Sequential``, with plain modules whose ``forward`` calls
layers and functions such as ``torch.tanh``, and with the code bases model
owners use:

* the generator may be a module, a bound method of one (``vae.decode`` of a
  diffusers ``AutoencoderKL``) or any callable together with ``module=``;
* its output may be a tensor, a tuple/list (the first element), a dict or a
  dataclass such as diffusers' ``DecoderOutput`` (``.sample``), or whatever an
  explicit ``output=`` selector (a key/attribute name or a callable) picks;
* the inputs may be drawn as standard normals of ``latent_shape`` or given by
  the user (``inputs=``: an array, a tensor or an iterable of batches, e.g.
  the scaled latents of a diffusion pipeline);
* a generator with several inputs, such as a conditional GAN's
  ``forward(noise, labels)``, takes a tuple: ``find_final_layer(G, (z, y))``
  calls ``G(z, y)``, and ``inputs=(Z, Y)`` (arrays or tensors with one row per
  sample) is split into batches ``G(Z[i:j], Y[i:j])`` (a dict is passed as
  keyword arguments).

The final layer is found with forward hooks (the last Linear/Conv2d/
ConvTranspose2d to run), and the output activation by comparing the
generator's output with tanh, sigmoid and the identity of that layer's
output, on the probe's own values and on a wide grid of values written into
that layer's output (so a ``torch.clamp`` / ``hardtanh`` that a small probe
never reaches is seen).
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn

from ._device import check_finite_parameters, resolve_device
from .operators import is_supported_layer

__all__ = ["FinalLayer", "find_final_layer", "mean_activation", "sample_activations"]


@dataclass
class FinalLayer:
    """What :func:`find_final_layer` found.

    Attributes
    ----------
    layer : torch.nn.Module
        The final Linear / Conv2d / ConvTranspose2d module.
    name : str
        Its qualified name in the generator.
    activation : str
        ``"tanh"``, ``"sigmoid"`` or ``"identity"``.
    activation_shape : tuple of int
        Shape of one penultimate activation (the layer's input).
    """

    layer: nn.Module
    name: str
    activation: str
    activation_shape: tuple


_ACTIVATION_TESTS = (
    ("tanh", torch.tanh),
    ("sigmoid", torch.sigmoid),
    ("identity", lambda t: t),
)

# Values written into the final layer's output to test the activation on a
# range no real probe has to reach: tanh, sigmoid and the identity still
# differ there in float32, and any clamp to a bound inside it shows.
_GRID_RANGE = 8.0
# Default number of latent codes the probe of sample_activations/mean_activation uses.
_N_PROBE = 8


# ------------------------------------------------------------------ adapters
def _resolve_generator(generator, module):
    """``(callable, module owning its layers)`` for a module, a bound method or
    a callable with ``module=``."""
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")
    if isinstance(generator, nn.Module):
        return generator, module if module is not None else generator
    owner = getattr(generator, "__self__", None)
    if callable(generator) and (module is not None or isinstance(owner, nn.Module)):
        return generator, module if module is not None else owner
    raise TypeError(
        f"generator must be a torch.nn.Module or a bound method of one (e.g. "
        f"vae.decode), got {type(generator).__name__}; for another callable pass "
        "module=<the torch.nn.Module whose layers it runs>.")


def _select_output(out, output=None):
    """The tensor inside a generator's output (see the module docstring)."""
    if output is not None:
        if callable(output):
            sel = output(out)
        elif isinstance(output, str):
            if isinstance(out, Mapping) and output in out:
                sel = out[output]
            elif hasattr(out, output):
                sel = getattr(out, output)
            else:
                keys = list(out.keys()) if isinstance(out, Mapping) else None
                raise ValueError(
                    f"output={output!r}: the generator's output "
                    f"({type(out).__name__}) has no such key or attribute"
                    + (f"; its keys are {keys}." if keys is not None else "."))
        else:
            raise TypeError(f"output must be a key/attribute name or a callable, got "
                            f"{type(output).__name__}.")
        if not isinstance(sel, torch.Tensor):
            raise TypeError(f"output={output!r} selected a {type(sel).__name__}, not a "
                            "torch.Tensor.")
        return sel
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        if isinstance(out.get("sample"), torch.Tensor):
            return out["sample"]
        tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return out[tensors[0]]
        raise TypeError(
            f"The generator returned a {type(out).__name__} with keys {list(out.keys())}; "
            "pass output=<key> (or a callable) to say which holds the samples.")
    if isinstance(getattr(out, "sample", None), torch.Tensor):   # diffusers' outputs
        return out.sample
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        tensors = [f.name for f in dataclasses.fields(out)
                   if isinstance(getattr(out, f.name), torch.Tensor)]
        if len(tensors) == 1:
            return getattr(out, tensors[0])
        raise TypeError(
            f"The generator returned a {type(out).__name__} with tensor fields "
            f"{tensors}; pass output=<field name> (or a callable) to say which holds "
            "the samples.")
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(
        f"The generator returned a {type(out).__name__}, not a tensor; pass "
        "output=<key or attribute name> or output=<callable returning the tensor>.")


def _module_device(module):
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _module_float_dtype(module):
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_latent_shape(latent_shape):
    if isinstance(latent_shape, Integral) and not isinstance(latent_shape, bool):
        latent_shape = (latent_shape,)
    try:
        shape = tuple(latent_shape)
    except TypeError:
        raise TypeError(f"latent_shape must be an int or a tuple of ints, got "
                        f"{latent_shape!r}.") from None
    if not shape or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1
                            for s in shape):
        raise ValueError(f"latent_shape must be positive integers, got {latent_shape!r}.")
    return tuple(int(s) for s in shape)


def _check_positive_int(value, name):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_layer_in(layer, module):
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be a torch.nn.Module, got {type(layer).__name__}.")
    if not any(m is layer for m in module.modules()):
        raise ValueError(
            f"layer ({type(layer).__name__}) is not a submodule of the generator "
            f"({type(module).__name__}): pass a module of that generator, e.g. "
            "find_final_layer(generator, z).layer.")


def _latents(n, latent_shape, rng, device):
    # numpy's stream does not depend on how the draws are batched (torch's
    # CPU randn does, for batches under 16 values)
    z = rng.standard_normal((n,) + tuple(latent_shape), dtype=np.float32)
    return torch.from_numpy(z).to(device)


def _to_input(batch, device, dtype):
    """One input batch on ``device``: a tensor, or a tuple / dict of them (several inputs).

    Floating tensors take the generator's dtype; integer ones (class labels)
    keep theirs.
    """
    if isinstance(batch, tuple):
        return tuple(_to_input(b, device, dtype) for b in batch)
    if isinstance(batch, Mapping):
        return {k: _to_input(v, device, dtype) for k, v in batch.items()}
    t = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch)
    if t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device)


def _call(fn, inputs):
    """``fn`` on one input batch: ``fn(*inputs)`` for a tuple (a generator with
    several inputs, e.g. ``forward(noise, labels)``), ``fn(**inputs)`` for a
    dict, else ``fn(inputs)``."""
    if isinstance(inputs, tuple):
        return fn(*inputs)
    if isinstance(inputs, Mapping):
        return fn(**inputs)
    return fn(inputs)


def _parts(inputs):
    """The tensors / arrays of one input batch (one, or those of a tuple / dict)."""
    if isinstance(inputs, tuple):
        return list(inputs)
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    return [inputs]


def _n_rows(inputs):
    """Number of samples of one input batch (the first axis of its first part)."""
    first = _parts(inputs)[0]
    shape = getattr(first, "shape", None)
    if shape is None or len(shape) < 1:
        raise ValueError("Each input (and each part of a tuple of inputs) must have a "
                         "leading sample axis.")
    return int(shape[0])


def _rows(inputs, start, stop):
    """Rows ``start:stop`` of every part of an input batch."""
    if isinstance(inputs, tuple):
        return tuple(p[start:stop] for p in inputs)
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] for k, v in inputs.items()}
    return inputs[start:stop]


def _is_array(x):
    return isinstance(x, (torch.Tensor, np.ndarray))


def _is_whole_inputs(inputs):
    """An array / tensor, or a tuple / dict of them with as many rows each: all
    the inputs at once (split into batches), not an iterable of batches."""
    if _is_array(inputs):
        return True
    if isinstance(inputs, (tuple, Mapping)):
        parts = _parts(inputs)
        return bool(parts) and all(_is_array(p) for p in parts)
    return False


# ------------------------------------------------------------- final layer
def find_final_layer(generator, example_input, *, output=None, module=None):
    """Find a generator's final linear layer and its output activation.

    Parameters
    ----------
    generator : torch.nn.Module or callable
        A module, a bound method of one (e.g. ``vae.decode`` of a diffusers
        ``AutoencoderKL``) or any callable with ``module=``.
    example_input : torch.Tensor, tuple or dict
        A batch of inputs (latent codes) the generator accepts.  A tuple is
        passed as positional arguments (a conditional generator's
        ``(noise, labels)``: ``generator(noise, labels)``), a dict as keyword
        arguments.
    output : str, callable or None, default=None
        Which part of the generator's output holds the samples: a key or
        attribute name, or a callable mapping the output to a tensor.  None:
        the output itself if it is a tensor, else ``.sample`` (diffusers), a
        dict's ``"sample"`` or single tensor, a dataclass's single tensor
        field, or a tuple's first element.
    module : torch.nn.Module or None, default=None
        The module whose layers ``generator`` runs; needed only when
        ``generator`` is neither a module nor a bound method of one.

    Returns
    -------
    FinalLayer

    Raises
    ------
    ValueError
        When no supported layer runs, when something other than an
        element-wise activation follows it, or when that activation is not
        tanh, sigmoid or the identity -- in particular a clamp/hardtanh,
        found by writing a wide grid of values into the layer's output.
    """
    fn, owner = _resolve_generator(generator, module)
    names = {m: n for n, m in owner.named_modules()}
    last = {}
    counts = {}

    def hook(mod, inputs, out):
        # keep only the latest call: holding every layer's activations would
        # multiply the probe's memory by the network's depth
        counts[mod] = counts.get(mod, 0) + 1
        last.update(layer=mod, inp=inputs[0].detach(), pre=out.detach(), call=counts[mod])

    handles = [m.register_forward_hook(hook) for m in owner.modules()
               if is_supported_layer(m)]
    try:
        with torch.no_grad():
            out = _select_output(_call(fn, example_input), output).detach()
    finally:
        for h in handles:
            h.remove()
    if not last:
        raise ValueError(
            "The generator ran no Linear, Conv2d or ConvTranspose2d module; "
            "FinalLayerInverter needs one of them as the final layer."
        )
    layer, inp, pre, call = last["layer"], last["inp"], last["pre"], last["call"]
    lname = names.get(layer, "?")
    if out.shape != pre.shape:
        raise ValueError(
            f"The generator's output has shape {tuple(out.shape)} but its last linear "
            f"layer ({lname}) outputs {tuple(pre.shape)}: something "
            "other than an element-wise activation follows it."
        )
    check_finite_parameters(layer, what=f"final layer ({lname})")
    if not (torch.isfinite(out).all() and torch.isfinite(pre).all()):
        raise ValueError(
            f"The generator's outputs on the example input contain NaN or infinity "
            f"(its final layer {lname} has finite parameters: look at the layers "
            "before it, or at the example input); its output activation cannot be "
            "identified from non-finite values."
        )
    grid = _grid_like(pre)
    out_grid = _run_with_layer_output(fn, owner, example_input, output, layer, call, grid)
    for name, act in _ACTIVATION_TESTS:
        if _matches(act(pre), out) and _matches(act(grid), out_grid):
            return FinalLayer(layer, names.get(layer, ""), name, tuple(inp.shape[1:]))
    lo, hi = float(out_grid.min()), float(out_grid.max())
    n_at = int(((out_grid == lo) | (out_grid == hi)).sum())
    at_bound = n_at / out_grid.numel()
    # a strictly monotone activation maps the grid's extremes alone to the bounds
    if n_at >= max(3, 0.05 * out_grid.numel()):
        raise ValueError(
            f"The generator's output activation saturates: with values in "
            f"[-{_GRID_RANGE:g}, {_GRID_RANGE:g}] written into its last linear layer "
            f"({lname}), {100 * at_bound:.0f}% of the outputs sit exactly at the bounds "
            f"[{lo:g}, {hi:g}] (a torch.clamp, hardtanh or similar). A clamp is not "
            "invertible: outputs at a bound do not determine the layer's output. "
            "Replace the clamp by tanh (or remove it) before using FLIPAD, or pass "
            "FinalLayerInverter(activation=...) yourself if only the unclamped range "
            "matters."
        )
    raise ValueError(
        "The generator's output is not tanh, sigmoid or the identity of its last "
        f"linear layer's ({lname}) output; pass the activation's "
        "inverse to FinalLayerInverter(activation=...) yourself."
    )


def _matches(a, b):
    scale = float(b.abs().max()) + 1e-12
    return float((a - b).abs().max()) <= 1e-5 * max(scale, 1.0)


def _grid_like(pre):
    n = pre.numel()
    g = torch.linspace(-_GRID_RANGE, _GRID_RANGE, n, dtype=pre.dtype, device=pre.device)
    # a fixed permutation spreads the extreme values over channels and positions
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(pre.device)
    return g[perm].reshape(pre.shape)


def _run_with_layer_output(fn, owner, example_input, output, layer, call, values):
    """The generator's output with ``layer``'s output (its ``call``-th call)
    replaced by ``values``."""
    seen = [0]

    def replace(mod, inputs, out):
        seen[0] += 1
        if seen[0] == call:
            return values

    handle = layer.register_forward_hook(replace)
    try:
        with torch.no_grad():
            return _select_output(_call(fn, example_input), output).detach()
    finally:
        handle.remove()


# ------------------------------------------------------------- activations
def sample_activations(generator, n_samples=None, latent_shape=None, *, inputs=None,
                       output=None, module=None, layer=None, batch_size=256,
                       device="auto", random_state=None, return_outputs=True, verbose=0):
    """Sample a generator and record its penultimate activations.

    Parameters
    ----------
    generator : torch.nn.Module or callable
        A module, a bound method of one (``vae.decode``) or a callable with
        ``module=`` (see :func:`find_final_layer`).
    n_samples : int or None, default=None
        Number of samples.  With ``inputs``: at most this many of them
        (None: all).
    latent_shape : int or tuple of int or None, default=None
        Shape of one latent code (an int ``n`` means ``(n,)``); codes are
        standard normal, drawn from a local numpy generator so that they do
        not depend on ``batch_size``.  Not used with ``inputs``.
    inputs : array-like, torch.Tensor, tuple, dict or iterable of batches, default=None
        The generator's inputs instead of standard normals: an array or
        tensor of shape ``(n, *input_shape)`` (split into ``batch_size``
        rows); a tuple (or dict) of them, one row per sample each, for a
        generator with several inputs (a conditional GAN's ``(noise,
        labels)``, called as ``generator(noise, labels)`` batch by batch);
        or an iterable yielding batches (each a tensor, a tuple or a dict,
        passed as it comes, e.g. the scaled latents of a diffusion pipeline,
        batch by batch).
    output : str, callable or None, default=None
        Which part of the generator's output holds the samples (see
        :func:`find_final_layer`).
    module : torch.nn.Module or None, default=None
        The module whose layers ``generator`` runs, when ``generator`` is a
        plain callable.
    layer : torch.nn.Module, default=None
        The final layer (found with :func:`find_final_layer` on the first
        batch if None); must be a submodule of the generator.
    batch_size : int, default=256
    device : {"auto", "cpu", "cuda"}, default="auto"
    random_state : int, RandomState or None
        Seeds a local numpy generator (no global RNG is touched).
    return_outputs : bool, default=True
    verbose : int, default=0
        Progress bar when positive.

    Returns
    -------
    activations : ndarray of shape (n_samples, n_activations), float32
    outputs : ndarray of shape (n_samples, *output_shape), float32
        Only when ``return_outputs``.
    """
    acts, outs = [], []
    for a, o in _iter_batches(generator, n_samples, latent_shape, inputs, output, module,
                              layer, batch_size, device, random_state, verbose):
        acts.append(a.reshape(a.shape[0], -1).cpu().numpy())
        if return_outputs:
            outs.append(o.cpu().numpy())
    acts = np.concatenate(acts).astype(np.float32, copy=False)
    if return_outputs:
        return acts, np.concatenate(outs).astype(np.float32, copy=False)
    return acts


def mean_activation(generator, n_samples=None, latent_shape=None, *, inputs=None,
                    output=None, module=None, layer=None, batch_size=256, device="auto",
                    random_state=None, verbose=0):
    """Mean penultimate activation over the generator's samples: FLIPAD's anchor.

    Takes the parameters of :func:`sample_activations` (standard-normal
    latents of ``latent_shape`` or the user's ``inputs``).  Memory stays at
    one batch.  Returns an array of the activation's shape (float64), ready
    for ``FinalLayerInverter(anchor=...)``.
    """
    total, count = None, 0
    for a, _ in _iter_batches(generator, n_samples, latent_shape, inputs, output, module,
                              layer, batch_size, device, random_state, verbose):
        s = a.to(torch.float64).sum(dim=0)
        total = s if total is None else total + s
        count += a.shape[0]
    return (total / count).cpu().numpy()


def _input_batches(n_samples, latent_shape, inputs, batch_size, random_state, device,
                   dtype):
    """Yield input batches (tensors on ``device``) and the total if known."""
    if inputs is None:
        if latent_shape is None:
            raise ValueError("Pass latent_shape (standard-normal latents are drawn) or "
                             "inputs=<the generator's inputs>.")
        if n_samples is None:
            raise ValueError("n_samples is needed to draw standard-normal latents.")
        latent_shape = _check_latent_shape(latent_shape)
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        gen = np.random.default_rng(int(seed))

        def draw():
            for start in range(0, n_samples, batch_size):
                yield _latents(min(batch_size, n_samples - start), latent_shape, gen, device)
        return draw(), n_samples
    if _is_whole_inputs(inputs):
        sizes = {_n_rows(p) for p in _parts(inputs)}
        if len(sizes) != 1:
            raise ValueError(f"The parts of inputs must have as many samples each; got "
                             f"{sorted(sizes)}.")
        n_rows = sizes.pop()
        if n_rows == 0:
            raise ValueError(f"inputs must hold at least one sample along its first axis; "
                             f"got shape {tuple(_parts(inputs)[0].shape)}.")
        total = n_rows if n_samples is None else min(n_samples, n_rows)

        def chunks():
            for start in range(0, total, batch_size):
                yield _to_input(_rows(inputs, start, min(start + batch_size, total)),
                                device, dtype)
        return chunks(), total
    if isinstance(inputs, (str, bytes, Mapping)) or not hasattr(inputs, "__iter__"):
        raise TypeError(f"inputs must be an array, a tensor, a tuple of them or an "
                        f"iterable of batches, got {type(inputs).__name__}.")

    def from_iterable():
        left = n_samples
        for batch in inputs:
            b = _to_input(batch, device, dtype)
            m = _n_rows(b)
            if left is not None:
                if left <= 0:
                    return
                b = _rows(b, 0, left)
                left -= min(m, left)
            yield b
    return from_iterable(), n_samples


def _iter_batches(generator, n_samples, latent_shape, inputs, output, module, layer,
                  batch_size, device, random_state, verbose):
    fn, owner = _resolve_generator(generator, module)
    if n_samples is not None:
        n_samples = _check_positive_int(n_samples, "n_samples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if layer is not None:
        _check_layer_in(layer, owner)
    dev = resolve_device(device)
    batches, total = _input_batches(n_samples, latent_shape, inputs, batch_size,
                                    random_state, dev, _module_float_dtype(owner))
    was_training = owner.training
    original_device = _module_device(owner)
    owner.eval()
    owner.to(dev)
    captured = {}

    def hook(mod, inp, out):
        captured["h"] = inp[0].detach()

    handle = bar = None
    try:
        if verbose:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc="sampling activations", unit="sample")
        n_done = 0
        for xb in batches:
            if handle is None:
                if layer is None:
                    # probe on the first batch, or a few of the same latents, when
                    # they are drawn (does not consume the seeded stream)
                    probe = xb if inputs is not None else _latents(
                        min(_N_PROBE, xb.shape[0]), _check_latent_shape(latent_shape),
                        np.random.default_rng(0), dev)
                    layer = find_final_layer(fn, probe, output=output, module=owner).layer
                handle = layer.register_forward_hook(hook)
            captured.clear()
            with torch.no_grad():
                out = _select_output(_call(fn, xb), output).detach()
            if "h" not in captured:
                raise ValueError(
                    f"layer ({type(layer).__name__}) did not run in the generator's "
                    "forward pass: pass the generator's final layer (see "
                    "find_final_layer).")
            n_done += _n_rows(xb)
            yield captured["h"], out
            if bar is not None:
                bar.update(_n_rows(xb))
        if n_done == 0:
            raise ValueError("inputs yielded no samples.")
    finally:
        if handle is not None:
            handle.remove()
        if bar is not None:
            bar.close()
        owner.to(original_device)
        owner.train(was_training)
