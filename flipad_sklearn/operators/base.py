"""The operator protocol: ``W`` acting on flat batches, and what a solver may ask of it.

The lasso solvers see ``W`` only through an :class:`Operator`:

* shapes: ``input_shape``, ``output_shape``, ``n_inputs``, ``n_outputs``;
* products: ``matvec`` (``W z``) and ``rmatvec`` (``Wᵀ r``) on ``(B, n)`` tensors
  of any device and dtype;
* ``lipschitz()`` (largest eigenvalue of ``WᵀW``, or an upper bound of it), ``to_dense()``,
  ``column_norms_sq()``, and a per-operator cache (:meth:`Operator.cached`);
* optional **capabilities**, each ``None`` (or the operator itself) when absent,
  so that a solver asks for what it needs instead of reading a layer type:

  ========================  ==============================================================
  ``stored_matrix()``       the dense matrix the operator *is* (a Linear layer): cheap,
                            so coordinate descent applies
  ``periodic_embedding()``  ``W = S T E`` with a stride-1 circular ``T``
                            (:mod:`.embedding`): the FFT methods (ADMM) need it
  ``channels_last()``       the same map on ``(H, W, C)``-ordered vectors, faster on CPU
                            (:mod:`.channels_last`)
  ``exact_products(dev)``   float64 products for a certificate on ``dev``
                            (:mod:`.spectral`); the operator itself by default
  ``fast_float32_checks``   float64 products cost far more than float32 ones (CPU
                            convolutions): float32 iterates are checked in float32 first
  ``phase_convolution``     the layer runs as one stride-1 convolution to its output
                            phases (a groups=1 transposed convolution)
  ========================  ==============================================================

An operator for a new kind of layer subclasses :class:`Operator` (or
:class:`LayerOperator` when it holds a weight) and is returned by that layer's
adapter (:mod:`.layers`); nothing outside this package reads a layer type.
"""

import numpy as np
import torch


class Operator:
    """Base of every operator: the products, shapes, a cache and the capability defaults.

    Subclasses set ``input_shape``, ``output_shape``, ``n_inputs`` and
    ``n_outputs``, call :meth:`_init_cache` and implement ``matvec`` and
    ``rmatvec``.
    """

    #: float64 products cost far more than float32 ones (see the module docstring)
    fast_float32_checks = False
    #: a groups=1 transposed convolution (see the module docstring)
    phase_convolution = False

    def _init_cache(self):
        self._cache = {}

    # ------------------------------------------------------------- products
    def matvec(self, z):
        """``W z`` for a batch ``z`` of shape ``(B, n_inputs)``."""
        raise NotImplementedError

    def rmatvec(self, r):
        """``Wᵀ r`` for a batch ``r`` of shape ``(B, n_outputs)``."""
        raise NotImplementedError

    @property
    def layer_name(self):
        """A short name for messages (``"Conv2d"``, ``"Linear"``, ...)."""
        return type(self).__name__

    # ------------------------------------------------------------ capabilities
    def stored_matrix(self):
        """The dense matrix ``W`` when the operator is one (cheap), else None."""
        return None

    def periodic_embedding(self):
        """``W = S T E`` (:class:`~.embedding.PeriodicEmbedding`), or None."""
        return None

    def channels_last(self):
        """The ``(H, W, C)``-ordered view, or None.

        See :class:`~.channels_last.ChannelsLastOperator`.
        """
        return None

    def exact_products(self, device):
        """What computes float64 ``W d`` and ``Wᵀ r`` for a certificate on ``device``."""
        return self

    # ------------------------------------------------------------------ shared
    def cached(self, key, factory):
        """``factory()``, computed once per ``key`` and kept with the operator.

        Solvers keep their per-layer set-up here (cast weights, embeddings,
        factorisations); the cache is dropped when the operator is pickled.
        """
        value = self._cache.get(key)
        if value is None:
            value = factory()
            self._cache[key] = value
        return value

    def to_dense(self, max_entries=50_000_000):
        """The matrix ``W`` (``n_outputs x n_inputs``, float64 numpy), by products."""
        if self.n_inputs * self.n_outputs > max_entries:
            raise ValueError(
                f"The layer's matrix has {self.n_outputs} x {self.n_inputs} entries, too "
                "many to build densely; use solver='fista' for layers of this size."
            )
        cols = []
        with torch.no_grad():
            for start in range(0, self.n_inputs, 1024):
                stop = min(start + 1024, self.n_inputs)
                eye = torch.zeros((stop - start, self.n_inputs), dtype=torch.float64)
                eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                cols.append(self.matvec(eye).T)
        return torch.cat(cols, dim=1).numpy()

    def column_norms_sq(self):
        """Squared column norms of ``W``, from the dense matrix (small operators)."""
        return torch.from_numpy((self.to_dense() ** 2).sum(axis=0))

    #: smaller side of ``W`` up to which :meth:`lipschitz` is exact (a dense Gram
    #: matrix of that side and its largest eigenvalue)
    DENSE_LIPSCHITZ_MAX = 1024
    #: entries of ``W`` up to which the exact route is taken (products cost
    #: ``min(M, K)`` matrix-vector products in float64)
    DENSE_LIPSCHITZ_ENTRIES = 10_000_000
    #: relative safety added to an eigenvalue computed in float64 (the Gram
    #: matrix's and ``eigvalsh``'s rounding, ``~ n eps ||G||``, far below it)
    EIGENVALUE_SAFETY = 1e-9

    def lipschitz(self, n_iter=500, tol=1e-10, seed=0):
        """Largest eigenvalue of ``WᵀW`` (the gradient's Lipschitz constant), or an upper bound.

        Exact (:meth:`exact_lipschitz`) where the smaller side of ``W`` is at
        most :attr:`DENSE_LIPSCHITZ_MAX`; otherwise power iteration
        (:meth:`power_lipschitz`), which approaches the eigenvalue from below
        and is therefore not a proven bound: operators that know a bound
        (convolutions: their periodic embedding) override this.
        """
        exact = self.exact_lipschitz()
        if exact is not None:
            return exact
        return self.power_lipschitz(n_iter=n_iter, tol=tol, seed=seed)

    def exact_lipschitz(self):
        """``||W||_2^2`` from the dense Gram matrix of the smaller side, or None if too large.

        ``W Wᵀ`` (or ``Wᵀ W``) is built by products with the identity in
        chunks, in float64; its largest eigenvalue, raised by
        :attr:`EIGENVALUE_SAFETY` (relative) for rounding, is an upper bound.
        """
        small, big = sorted((self.n_inputs, self.n_outputs))
        if small > self.DENSE_LIPSCHITZ_MAX or small * big > self.DENSE_LIPSCHITZ_ENTRIES:
            return None
        outputs = self.n_outputs <= self.n_inputs       # W Wᵀ (M x M), else Wᵀ W
        first, second = (self.rmatvec, self.matvec) if outputs else (self.matvec, self.rmatvec)
        chunk = max(1, min(small, 4_000_000 // big))
        gram = torch.empty((small, small), dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, small, chunk):
                stop = min(start + chunk, small)
                eye = torch.zeros((stop - start, small), dtype=torch.float64)
                eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
                gram[start:stop] = second(first(eye))
        gram = 0.5 * (gram + gram.T)
        top = float(torch.linalg.eigvalsh(gram)[-1])
        return max(top, 0.0) * (1.0 + self.EIGENVALUE_SAFETY)

    def power_lipschitz(self, n_iter=500, tol=1e-10, seed=0):
        """Power iteration on ``WᵀW``: an estimate (from below), raised to be safe in practice.

        Stops when the Rayleigh quotient ``rho`` changes by less than ``tol``
        relatively.  The Rayleigh quotient is at most the largest eigenvalue
        and approaches it slowly when the top eigenvalues are clustered (an
        estimate 0.5 % low on a 64x8x8 convolution,
        ``benchmarks/results/bench_lipschitz.md``), so the estimate is raised
        by the eigen-residual ``||WᵀW v - rho v||`` (an eigenvalue of
        ``WᵀW`` lies within it of ``rho``) and by 1 %.  Not a proven bound.
        """
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn((1, self.n_inputs), generator=gen, dtype=torch.float64)
        v /= v.norm()
        est, resid = 0.0, 0.0
        with torch.no_grad():
            for _ in range(n_iter):
                u = self.rmatvec(self.matvec(v))
                new = float((u * v).sum())
                norm = float(u.norm())
                if norm == 0.0:
                    return 0.0
                resid = float((u - new * v).norm())
                v = u / norm
                if abs(new - est) <= tol * max(new, 1e-300):
                    est = new
                    break
                est = new
        return (est + resid) * 1.01

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


class LayerOperator(Operator):
    """An operator holding a layer's weight (a CPU float64 tensor, pickled as numpy).

    ``LayerOperator.from_layer(layer, input_shape)`` returns the operator of
    any registered layer type (:func:`~.layers.layer_adapter`).

    Parameters
    ----------
    weight : torch.Tensor
        The layer's weight (copied to CPU float64).
    input_shape : tuple of int
        Shape of one activation (``(K,)`` or ``(C, H, W)``).
    conv_kwargs : dict, default=None
        The layer's geometry (stride, padding, ... as integer pairs).
    """

    def __init__(self, weight, input_shape, conv_kwargs=None):
        self.weight = weight.detach().to("cpu", torch.float64).clone()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.conv_kwargs = dict(conv_kwargs or {})
        self.output_shape = self._compute_output_shape()
        self.n_inputs = int(np.prod(self.input_shape))
        self.n_outputs = int(np.prod(self.output_shape))
        self._init_cache()

    @classmethod
    def from_layer(cls, layer, input_shape):
        """The operator of ``layer`` on activations of ``input_shape`` (its adapter's)."""
        return layer_adapter(layer).operator(layer, input_shape)

    def _compute_output_shape(self):
        raise NotImplementedError

    def weight_as(self, device, dtype):
        """The weight on ``device`` in ``dtype`` (cached)."""
        return self.cached(("weight", str(device), dtype),
                           lambda: self.weight.to(device=device, dtype=dtype))

    def __getstate__(self):
        state = super().__getstate__()
        state["weight"] = self.weight.numpy()
        return state

    def __setstate__(self, state):
        state["weight"] = torch.from_numpy(np.asarray(state["weight"], dtype=np.float64))
        state.pop("kind", None)         # pickled before operators had no kind string
        self.__dict__.update(state)


# ------------------------------------------------------------------ registry
#: layer adapters by registration (:mod:`.layers` registers the built-in ones)
_ADAPTERS = []


def register_layer(adapter):
    """Register a :class:`~.layers.LayerAdapter`: its ``layer_type`` becomes invertible.

    A later registration for a subclass of a registered type takes precedence
    for that subclass.  Returns the adapter (usable as a class decorator on an
    adapter's class when it is instantiated with no arguments).
    """
    if isinstance(adapter, type):
        adapter = adapter()
    if not (isinstance(getattr(adapter, "layer_type", None), type)
            and isinstance(getattr(adapter, "name", None), str) and adapter.name
            and callable(getattr(adapter, "operator", None))):
        raise TypeError(f"register_layer needs a LayerAdapter with a layer_type class, a "
                        f"name and an operator method, got {type(adapter).__name__}.")
    for other in _ADAPTERS:
        if other.name == adapter.name and other.layer_type is not adapter.layer_type:
            raise ValueError(f"A layer adapter named {adapter.name!r} is registered for "
                             f"{other.layer_type.__name__} already.")
    _ADAPTERS[:] = [a for a in _ADAPTERS if a.layer_type is not adapter.layer_type]
    _ADAPTERS.append(adapter)
    return adapter


def registered_layers():
    """The registered layer types, in registration order."""
    return tuple(a.layer_type for a in _ADAPTERS)


def find_layer_adapter(layer):
    """The adapter of ``layer``'s type (the most derived registered type), or None."""
    best = None
    for a in _ADAPTERS:
        if isinstance(layer, a.layer_type) and (
                best is None or issubclass(a.layer_type, best.layer_type)):
            best = a
    return best


def layer_adapter(layer):
    """The adapter of ``layer``; a TypeError naming the supported types if there is none."""
    adapter = find_layer_adapter(layer)
    if adapter is None:
        names = ", ".join(f"torch.nn.{t.__name__}" if t.__module__.startswith("torch")
                          else t.__name__ for t in registered_layers())
        raise TypeError(f"Unsupported final layer type {type(layer).__name__!r}: "
                        f"FinalLayerInverter handles {names}.")
    return adapter


def adapter_named(name):
    """The adapter registered under ``name`` (a saved layer description's type)."""
    for a in _ADAPTERS:
        if a.name == name:
            return a
    raise ValueError(f"Unknown layer type {name!r} in a layer description; expected one of "
                     f"{sorted(a.name for a in _ADAPTERS)}.")
