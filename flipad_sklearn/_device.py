"""Resolve the ``device`` parameter shared by the torch-backed estimators."""

import torch

SUPPORTED_DEVICES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def resolve_device(device):
    """Return a ``torch.device`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    ``"auto"`` picks CUDA when it is available.  Asking for CUDA on a machine
    without it is an error rather than a silent fall-back to the CPU.  Other
    device types (``"mps"``, ``"xpu"``, a typo such as ``"gpu"``) are refused
    with a ``ValueError`` naming the supported ones: the solvers and the
    float64 certificates are only written and tested for the CPU and CUDA.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string or a torch.device; got {device!r}.")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        hint = " (for a GPU, use 'cuda')" if device.lower().startswith("gpu") else ""
        raise ValueError(
            f"device={device!r} is not supported{hint}; use {SUPPORTED_DEVICES}."
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine; use device='cpu' or device='auto'."
        )
    if dev.type == "cuda" and dev.index is not None \
            and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA "
            f"device(s), numbered from 0."
        )
    return dev


def check_materialised(module, what="layer"):
    """Raise a ``ValueError`` when ``module`` has tensors on the meta device.

    A module built under ``torch.device("meta")`` (or loaded lazily, e.g. by
    ``accelerate``/``diffusers`` with ``low_cpu_mem_usage``) has shapes but no
    values: nothing can be computed from it.
    """
    tensors = list(module.parameters()) + list(module.buffers())
    if any(t.device.type == "meta" for t in tensors):
        raise ValueError(
            f"The {what}'s parameters are on the meta device (shapes without values), "
            "so it cannot be inverted. Load its weights first, e.g. "
            "module.to_empty(device='cpu') followed by module.load_state_dict(...), "
            "or load the model without low_cpu_mem_usage/device_map='meta'."
        )


def check_finite_parameters(module, what="layer"):
    """Raise a ``ValueError`` naming the parameters of ``module`` that hold NaN or inf.

    A final layer with a non-finite weight or bias cannot be inverted: its
    Lipschitz constant is NaN and every inversion returns the anchor, so every
    sample (noise included) would get the same features and the same verdict.
    """
    bad = []
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() or t.is_complex():
            n_bad = int((~torch.isfinite(t.detach())).sum())
            if n_bad:
                bad.append(f"{name} ({n_bad} of {t.numel()} entries)")
    if bad:
        raise ValueError(
            f"The {what}'s parameters contain NaN or infinity: {', '.join(bad)}. A "
            "final layer with non-finite parameters cannot be inverted (every sample "
            "would map to the anchor and get the same verdict); check the generator's "
            "weights (a diverged training run, a bad checkpoint or a failed load)."
        )
