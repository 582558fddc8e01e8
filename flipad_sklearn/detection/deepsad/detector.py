"""FLIPADDetector: Deep SAD with a conformal threshold, as a scikit-learn outlier detector."""

import contextlib
import copy
import math
import sys
import time
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context, clone
from sklearn.svm import OneClassSVM
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ..._device import resolve_device
from ..._validation import (
    check_image_shape,
    check_labels,
    flatten_images,
    resolve_input_shape,
)
# The conformal rule lives in flipad_sklearn.detection.conformal; the names stay importable here.
from ..conformal import (  # noqa: F401
    CONFORMAL_CONSTRAINTS,
    ConformalDecisionMixin,
    ThresholdWarning,
    conformal_threshold,
)
from .networks import build_network, check_bias_free, has_batch_norm, rebuild_network


_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}

#: At most this many of G's training samples fit the one-class part (an RBF
#: one-class SVM costs O(n^2) to O(n^3) in time; a few thousand samples suffice).
ONE_CLASS_MAX_SAMPLES = 2000
#: At most this many networks (``n_networks``): the spread across seeds is
#: already small at 5, and a saved file is refused beyond it.
MAX_NETWORKS = 64
_TINY = 1e-300    # log of a distance or kernel sum that is (numerically) 0
#: The guarded combination ``combine="auto"`` uses when it keeps the guard
#: (training without labelled negatives).
GUARD_COMBINATION = "mean"


class FLIPADDetector(ConformalDecisionMixin, OutlierMixin, BaseEstimator):
    """Deep SAD one-class detector for "was this sample made by my generator G?".

    A bias-free network ``phi`` maps features to ``R^rep_dim``.  The centre
    ``c`` is the mean of ``phi`` at initialisation over G's and the unlabelled
    training samples.  Training minimises ``||phi(x) - c||^2`` for G's and
    unlabelled samples and ``eta * (||phi(x) - c||^2 + 1e-6)^-1`` for labelled
    non-G samples.  The decision threshold is the conformal ``(1 - fnr)``
    quantile of the distances of held-out samples of G, so at most a fraction
    ``fnr`` of G's own samples is rejected (in expectation over the split).

    By default (``one_class="ocsvm"``) a one-class SVM fitted on G's training
    samples alone guards Deep SAD: the score combines the two log-scores,
    each standardised on G's training samples (``combine``), and the
    conformal threshold is set on that combined score.  Labelled negatives
    teach Deep SAD the directions in which *they* differ from G (real
    images, known shadows); it then accepts other generators that differ
    from G elsewhere (issue 13: same architecture, unseen seed, accuracy at
    fnr = 0.005 0.887 against 0.998 for a one-class SVM on the same
    features).  The guard rejects what is far from G in any direction, Deep
    SAD what is like the known negatives; ``one_class=None`` is the paper's
    Deep SAD alone.

    With labelled negatives the guard costs more than it gives, so by
    default (``combine="auto"``) it is used only for one-class training (no
    ``y == -1``).  Its log-score has a heavy lower tail on G's own samples
    (the RBF kernel sum decays like ``exp(-gamma d^2)``), so the fnr
    threshold of the combined score can land far below G's bulk, where other
    generators sit: on the published face DCGAN it accepted the noise of
    an unseen generator trained 14 steps, which Deep SAD alone rejected (a
    first run; against others trained 372 steps the two are level,
    ``benchmarks/results/bench_open_world_face.md``).  The cost is where
    the only negatives are real data: on the image zoo the guard did better
    there; with shadow negatives the two are level
    (``benchmarks/results/guard_image_*.md``, :ref:`guard-combination`).
    What it gives up: a direction of difference from G that neither the
    labelled negatives nor Deep SAD show (``combine="mean"`` keeps the
    guard then).
    ``combine_`` and ``guard_check_`` say what was chosen and why.

    Labels: ``y = 1`` made by G (normal), ``y = -1`` known not made by G
    (real data, other generators: labelled anomalies), ``y = 0`` unlabelled
    (trained as normal).  ``fit(X)`` is one-class training.  Other label values
    are treated as unlabelled with a warning.

    Parameters
    ----------
    network : {"auto", "mlp", "lenet"}, torch.nn.Module or callable, default="auto"
        ``"auto"`` picks ``"lenet"`` when ``input_shape`` is given, else
        ``"mlp"``.  A module is deep-copied and trained from its current
        weights; a callable ``f(n_features) -> nn.Module`` is called inside
        ``fit`` (under a forked, seeded torch RNG when ``random_state`` is
        set).  User networks receive flat ``(batch, n_features)`` float32
        tensors (reshape inside ``forward``) and must be bias-free, with
        ``affine=False`` normalisation, else a ``ValueError`` is raised.
        Their weights are pickled with the module itself (on the CPU).
    input_shape : tuple of (C, H, W) or None, default=None
        Shape of one sample for the conv net; flat input is reshaped to it.
        Taken from ``X`` when ``X`` is 4-D.
    hidden_sizes : tuple of int, default=(128, 64)
        Hidden layer widths of the MLP.
    conv_channels : tuple of int, default=(32, 64)
        Output channels of the conv blocks of the LeNet.
    kernel_size : int, default=5
        Convolution kernel size of the LeNet.
    rep_dim : int, default=32
        Dimension of the representation space.
    batch_norm : bool, default=True
        Batch norm (``affine=False``) after each hidden layer of the built-in
        networks.
    eta : float, default=1.0
        Weight of the labelled non-G samples in the loss.
    one_class : "ocsvm", estimator or None, default="ocsvm"
        One-class detector combined with Deep SAD (see above), fitted on G's
        (and the unlabelled) training samples only, at most
        ``ONE_CLASS_MAX_SAMPLES`` (2000, drawn at random) of them.
        ``"ocsvm"``: ``OneClassSVM(kernel="rbf", gamma="scale", nu=0.1)``; an
        estimator with ``fit`` and ``score_samples`` (higher = more normal) is
        cloned.  None: Deep SAD alone (``score_samples`` is then minus the
        squared distance to the centre).
    combine : {"auto", "min", "mean"}, default="auto"
        How Deep SAD's and the one-class score, both log-scores standardised
        on G's scale samples (``score_scale_``), are combined when
        ``one_class`` is set.  ``"min"``: their minimum (a sample must look
        like G to both).  ``"mean"``: their mean (the one-class log-score is
        unbounded below, so what is far from G is still rejected; a sample
        only a little off for the guard keeps Deep SAD's ranking).
        ``"auto"``: ``"mean"`` when the training set has no labelled
        negatives (``y == -1``), else Deep SAD alone (the guard is then not
        fitted; see above).  Ignored with ``one_class=None``.
    n_networks : int, default=1
        Networks trained (at most ``MAX_NETWORKS``, 64), each from its own
        initialisation and batch order (seeded from ``random_state``) on the
        same samples.  With more than one, the squared distance is the mean
        over the networks of each one's distance divided by its median on G's
        training samples
        (``distance_scales_``), and everything after it (the guard's
        combination, the threshold) is unchanged.  One network's verdicts
        depend on its training draw: another seed, or another thread count
        (the last bits of a float32 sum), can move the share of an unseen
        generator it rejects by several tenths where the margin is thin; the
        mean of several varies less, at ``n_networks`` times the training
        time (``benchmarks/bench_family_left_out.py --seeds``).  Needs a
        network that can be built afresh (``"auto"``, ``"mlp"``, ``"lenet"``
        or a callable).
    eps : float, default=0.1
        Centre coordinates with ``|c_j| < eps`` are set to ``+-eps`` (0 counts
        as +), so that no coordinate is trivially reachable by zero weights.
    n_epochs : int, default=50
        Training epochs.
    batch_size : int, default=128
        Mini-batch size for training and scoring.  With batch norm the last
        incomplete training batch is dropped.
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=1e-6
        Adam weight decay.
    lr_milestones : tuple of int, default=()
        Epochs at which the learning rate is multiplied by ``lr_gamma``.
    lr_gamma : float, default=0.1
        Learning-rate decay factor at each milestone.
    fnr : float, default=0.005
        Tolerated false-negative rate: the share of G's own samples that may
        be rejected.  Needs at least ``1/fnr - 1`` validation samples for the
        guarantee (199 at 0.005,
        :func:`~flipad_sklearn.detection.conformal.required_validation_size`); with
        fewer, the largest validation distance is the threshold, the
        held-out sample at it is rejected too, the guarantee is
        ``fnr_bound_ = 1/(n+1)`` and a :class:`ThresholdWarning` says so and
        how many samples of G are needed.
    validation_size : "auto", int or None, default="auto"
        Samples of G (``y == 1``; all normal samples when there are none)
        held out of training to set the threshold.  ``"auto"``: as many as
        ``fnr`` needs, or ``validation_fraction`` of them if that is more, but
        at most half of G's samples.  An int: that many; ``0`` trains on all
        of them and leaves the threshold to
        :func:`~flipad_sklearn.detection.conformal.calibrate` on fresh samples of G.
        None: ``validation_fraction`` of them.
    validation_fraction : float, default=0.2
        Share of G's samples held out (the least share with ``"auto"``).
    score_dtype : {"float64", "float32"}, default="float64"
        Precision of scoring (training is always float32).  float64 makes a
        sample's score independent of the batch it is scored in (to ~1e-15);
        float32 is several times faster for conv nets on a CPU, and scores
        are then computed in fixed-size, zero-padded chunks of ``batch_size``
        so that they still do not depend on how ``X`` is split.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Where to train and score.  The fitted network is stored as numpy
        arrays when pickled, so a detector fitted on CUDA loads on a CPU-only
        machine (it then scores on the CPU).
    random_state : int, RandomState instance or None, default=None
        Seeds the split, the initial weights and the batch order through local
        generators; the global numpy/torch RNGs are not touched.
    verbose : int, default=0
        0: silent.  1: a tqdm progress bar over the epochs on stderr, with the
        current loss and learning rate.  2 or more: also one line per epoch
        (loss, learning rate, time) on stdout.

    Attributes
    ----------
    network_ : torch.nn.Module
        The trained network, in eval mode and in ``score_dtype``.
    center_ : ndarray of shape (rep_dim,)
        The centre ``c``.
    extra_networks_ : list of torch.nn.Module
        With ``n_networks > 1``, the networks after the first (``network_``),
        in eval mode and in ``score_dtype``; empty otherwise.
    extra_centers_ : ndarray of shape (n_networks - 1, rep_dim)
        Their centres.
    distance_scales_ : ndarray of shape (n_networks,) or None
        With ``n_networks > 1``, each network's median squared distance over
        G's training samples, by which its distances are divided before the
        mean; None with one network (its distance is used as it is).
    one_class_ : estimator or None
        The fitted one-class detector (None with ``one_class=None``).
    score_scale_ : ndarray of shape (2, 2) or None
        Location (median) and scale (std) of Deep SAD's score (row 0) and of
        the one-class score (row 1) over G's training samples: with
        ``combine_ == "min"`` the score is
        ``min((s_deep - loc_0) / scale_0, (s_one_class - loc_1) / scale_1)``.
    combine_ : {"min", "mean", "deep_sad"}
        The combination used: ``combine`` itself, or for ``"auto"`` the
        rule's choice; ``"deep_sad"`` (Deep SAD alone) also with
        ``one_class=None``.
    guard_check_ : dict or None
        With ``combine="auto"`` and ``one_class`` set: ``"reason"`` (why
        ``combine_`` was chosen) and ``"n_negatives"`` (labelled negatives in
        training).  Else None.
    threshold_ : float
        Outlier score (``-score_samples``) above which a sample is rejected
        as not made by G; PyOD's ``threshold_``, on ``decision_scores_``'s scale.
    offset_ : float
        ``-threshold_``; ``decision_function = score_samples - offset_``.
    fnr_bound_ : float
        The false-negative rate the threshold guarantees for a new sample
        of G: at most ``fnr`` with enough held-out samples, else ``1/(n+1)``
        (:func:`~flipad_sklearn.detection.conformal.fnr_bound`).  ``predict``
        rejects exactly the samples whose :meth:`pvalues` are at most it.
    decision_scores_ : ndarray of shape (n_samples,)
        PyOD's outlier scores of the samples given to ``fit``, in their order:
        ``-score_samples`` (higher = less like G).  ``labels_`` (a property)
        is PyOD's ``decision_scores_ > threshold_`` as 0 (inlier, like G) /
        1 (outlier, not G): not the package's ``y`` convention.  With
        ``predict_proba`` and ``predict_confidence`` they make the detector
        usable where PyOD's API is expected
        (:class:`~flipad_sklearn.detection.conformal.ConformalDecisionMixin`).
    validation_scores_ : ndarray
        Sorted scores (minus the distances) of the held-out samples of G (for
        :meth:`pvalues`).  ``validation_distances_`` is a deprecated alias
        (the distances, sorted).
    fnr_interval_ : tuple of float
        The central 90 % interval of the share of G's samples that this
        threshold rejects (:func:`~flipad_sklearn.fnr_interval`): ``fnr`` is
        its mean over held-out draws, not a bound on one threshold.
    n_calibration_kinds_ : int
        1: the threshold is set on held-out samples of G as they came (or
        perturbed once, as at fit).  k > 1: on each sample's lowest score over
        the k kinds of a mixture of perturbations
        (:func:`~flipad_sklearn.calibrate` with ``each_kind=True``), so that
        the fnr holds under each kind.
    history_ : dict of lists
        ``"loss"`` (mean training loss), ``"lr"`` and ``"time"`` per epoch.
    input_shape_ : tuple or None
        Per-sample shape used by the conv net.  4-D input to the scoring
        methods must have this shape (another layout of the same size, such
        as channels last, is refused).
    n_features_in_ : int
        Number of (flat) features seen in ``fit``.
    device_ : torch.device
        Device used for training.

    Notes
    -----
    ``GridSearchCV(scoring="roc_auc")`` scores ``decision_function`` against
    ``y``: pass ``y`` in {-1, +1} there (a 0 makes a third class).

    Examples
    --------
    >>> import numpy as np
    >>> from flipad_sklearn import FLIPADDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 8))
    >>> det = FLIPADDetector(n_epochs=3, fnr=0.05, random_state=0).fit(X)
    >>> det.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        "network": [StrOptions({"auto", "mlp", "lenet"}), torch.nn.Module, callable],
        "input_shape": [None, tuple, list],
        "hidden_sizes": [tuple, list],
        "conv_channels": [tuple, list],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "rep_dim": [Interval(Integral, 1, None, closed="left")],
        "batch_norm": ["boolean"],
        "eta": [Interval(Real, 0, None, closed="left")],
        "one_class": [StrOptions({"ocsvm"}), HasMethods(["fit", "score_samples"]), None],
        "combine": [StrOptions({"auto", "min", "mean"})],
        "n_networks": [Interval(Integral, 1, MAX_NETWORKS, closed="both")],
        "eps": [Interval(Real, 0, None, closed="neither")],
        "n_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "lr_milestones": [tuple, list],
        "lr_gamma": [Interval(Real, 0, None, closed="neither")],
        **CONFORMAL_CONSTRAINTS,
        "score_dtype": [StrOptions({"float64", "float32"})],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        network="auto",
        *,
        input_shape=None,
        hidden_sizes=(128, 64),
        conv_channels=(32, 64),
        kernel_size=5,
        rep_dim=32,
        batch_norm=True,
        eta=1.0,
        one_class="ocsvm",
        combine="auto",
        n_networks=1,
        eps=0.1,
        n_epochs=50,
        batch_size=128,
        lr=1e-3,
        weight_decay=1e-6,
        lr_milestones=(),
        lr_gamma=0.1,
        fnr=0.005,
        validation_size="auto",
        validation_fraction=0.2,
        score_dtype="float64",
        device="auto",
        random_state=None,
        verbose=0,
    ):
        self.network = network
        self.input_shape = input_shape
        self.hidden_sizes = hidden_sizes
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.rep_dim = rep_dim
        self.batch_norm = batch_norm
        self.eta = eta
        self.one_class = one_class
        self.combine = combine
        self.n_networks = n_networks
        self.eps = eps
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_milestones = lr_milestones
        self.lr_gamma = lr_gamma
        self.fnr = fnr
        self.validation_size = validation_size
        self.validation_fraction = validation_fraction
        self.score_dtype = score_dtype
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    _min_train_samples = 2  # the centre and batch norm need two training samples

    def _threshold_margin(self):
        # float32 scores move by ~1e-7 relative between batches; float64 by ~1e-15.
        return 1e-10 if next(self.network_.parameters()).dtype == torch.float64 else 1e-5

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the network and set the threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Training features.
        y : array-like of shape (n_samples,), default=None
            1 = made by G, -1 = known not made by G, 0 = unlabelled.
            None: all samples are G's.

        Returns
        -------
        self : FLIPADDetector
        """
        if self.n_networks > 1 and isinstance(self.network, torch.nn.Module):
            raise ValueError("n_networks > 1 needs a network that can be built afresh "
                             "('auto', 'mlp', 'lenet' or a callable): copies of one module "
                             "would all start from its weights.")
        X, nd_shape = flatten_images(X)
        X = validate_data(self, X, dtype=[np.float32, np.float64],
                          ensure_min_samples=2)
        labels = check_labels(y, X.shape[0])
        shape = self._network_input_shape(nd_shape, X.shape[1])
        rng = check_random_state(self.random_state)
        train_idx, val_idx = self._validation_split(labels, rng)

        self.device_ = resolve_device(self.device)
        gen = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
        # drawn after the network's seed: one_class=None trains exactly as before
        self._choose_combine(int(np.sum(labels[train_idx] == -1)))
        scale_idx = self._scale_split(train_idx, labels, rng)
        train_idx = np.setdiff1d(train_idx, scale_idx)
        net, spec = self._make_network(X.shape[1], shape, gen)
        check_bias_free(net)
        net = net.to(self.device_)

        X_train = _to_tensor(X[train_idx], torch.float32)
        y_train = torch.as_tensor(labels[train_idx])
        center = self._init_center(net, X_train, y_train)
        self.history_ = self._train(net, center, X_train, y_train, gen)

        self.network_ = net.to(_TORCH_DTYPES[self.score_dtype]).eval()
        self._network_spec = spec
        self.center_ = center.double().cpu().numpy()
        self.input_shape_ = shape
        # drawn after the first network's training: n_networks=1 trains exactly as before
        self._train_extra_networks(X.shape[1], shape, X_train, y_train, rng)

        self._fit_one_class(X[train_idx][labels[train_idx] != -1], X[scale_idx], rng)
        self._fit_threshold(X[val_idx], self._scores, X_fit=X, val_idx=val_idx)
        return self

    def _train_extra_networks(self, n_features, shape, X_train, y_train, rng):
        """Networks 2..n_networks, and every network's distance scale (n_networks > 1)."""
        self.extra_networks_, self.distance_scales_ = [], None
        self.extra_centers_ = np.empty((0, self.center_.size))
        if self.n_networks == 1:
            return
        centers = []
        for _ in range(self.n_networks - 1):
            gen = torch.Generator().manual_seed(int(rng.randint(np.iinfo(np.int32).max)))
            net, _ = self._make_network(n_features, shape, gen)
            check_bias_free(net)
            net = net.to(self.device_)
            center = self._init_center(net, X_train, y_train)
            self._train(net, center, X_train, y_train, gen)
            self.extra_networks_.append(net.to(_TORCH_DTYPES[self.score_dtype]).eval())
            centers.append(center.double().cpu().numpy())
        self.extra_centers_ = np.stack(centers)
        # each network's typical distance on G's training samples puts them on one scale
        normal = X_train[y_train != -1].numpy()
        scales = [np.median(self._member_distances(net, c, normal))
                  for net, c in self._members()]
        self.distance_scales_ = np.array(
            [m if np.isfinite(m) and m > 0 else 1.0 for m in scales], dtype=np.float64)

    def _members(self):
        """(network, centre) of every trained network, the first one first."""
        return [(self.network_, self.center_)] + list(zip(
            getattr(self, "extra_networks_", []), getattr(self, "extra_centers_", [])))

    def _choose_combine(self, n_negatives):
        """Set ``combine_`` and ``guard_check_``: how the two scores are combined, and why."""
        self.guard_check_ = None
        if self.one_class is None:
            self.combine_ = "deep_sad"
        elif self.combine != "auto":
            self.combine_ = self.combine
        elif n_negatives == 0:
            self.combine_ = GUARD_COMBINATION
            self.guard_check_ = {"reason": "no labelled negatives: guard kept",
                                 "n_negatives": 0}
        else:
            self.combine_ = "deep_sad"
            self.guard_check_ = {
                "reason": (f"{n_negatives} labelled negatives: Deep SAD alone (with "
                           "negatives, the guard's heavy lower tail on G's samples moves "
                           "the fnr threshold below other generators)"),
                "n_negatives": n_negatives}

    def _uses_guard(self):
        return self.one_class is not None and self.combine_ != "deep_sad"

    def _scale_split(self, train_idx, labels, rng):
        """G's training samples kept out of training to put both scores on one scale.

        Trained networks score their own training samples too well (Deep SAD
        pulls them onto the centre), so the scales come from samples neither
        part saw: 20% of G's training samples (at most 1000).  With fewer
        than 20 of them (toy data) there is no scale set and the training
        samples are used.
        """
        if not self._uses_guard():
            return train_idx[:0]
        normal = train_idx[labels[train_idx] != -1]
        n_scale = min(int(0.2 * normal.size), 1000) if normal.size >= 20 else 0
        return np.sort(rng.permutation(normal)[:n_scale])

    def _fit_one_class(self, X_normal, X_scale, rng):
        """Fit the one-class guard on G's training samples, the scales on ``X_scale``."""
        self.one_class_ = self.score_scale_ = None
        if not self._uses_guard():
            return
        if isinstance(self.one_class, str):
            est = OneClassSVM(kernel="rbf", gamma="scale", nu=0.1)
        else:
            est = clone(self.one_class)
        if X_normal.shape[0] > ONE_CLASS_MAX_SAMPLES:
            X_normal = X_normal[np.sort(rng.permutation(X_normal.shape[0])[
                :ONE_CLASS_MAX_SAMPLES])]
        self.one_class_ = est.fit(X_normal)
        if X_scale.shape[0] == 0:
            X_scale = X_normal
        scale = []
        for s in self._log_scores(X_scale):
            loc, sd = float(np.median(s)), float(np.std(s))
            # constant training scores (tiny or degenerate data): no rescaling
            scale.append((loc, sd if np.isfinite(sd) and sd > 1e-12 * (1 + abs(loc))
                          else 1.0))
        self.score_scale_ = np.array(scale, dtype=np.float64)

    def _log_scores(self, X):
        """``-log(distance)`` and ``log(one-class score)``, both higher = more like G.

        On a log scale both tails are unbounded and comparable: the RBF
        one-class score is a kernel sum in ``(0, max]`` (``-log`` grows like a
        squared distance), Deep SAD's squared distance is heavy-tailed.
        Standardised raw scores would let Deep SAD's tail set the threshold
        alone, where the bounded one-class score could never reach it.
        """
        deep = -np.log(np.maximum(self._distances(X), _TINY))
        other = np.asarray(self.one_class_.score_samples(X), dtype=np.float64)
        return deep, np.log(np.maximum(other, _TINY))

    def _standard_scores(self, X):
        """Both log-scores standardised with ``score_scale_`` (higher = more like G)."""
        (l0, s0), (l1, s1) = self.score_scale_
        deep, other = self._log_scores(X)
        return (deep - l0) / s0, (other - l1) / s1

    def _scores(self, X):
        """The detector's score of validated flat ``X`` (higher = more like G)."""
        scores = self._unchecked_scores(X)
        bad = ~np.isfinite(scores)
        if bad.any():
            # a NaN or infinite score compares as "not G" and gets a p-value: a verdict
            # from an overflow, not from the sample
            raise FloatingPointError(
                f"{int(bad.sum())} of {scores.size} scores are not finite (NaN or "
                "infinite): the network overflows on these features (a corrupted or "
                "crafted detector, or features far outside those it was trained on); no "
                "verdict is given.")
        return scores

    def _unchecked_scores(self, X):
        if getattr(self, "one_class_", None) is None:
            return -self._distances(X)
        # fitted before combine_ existed: the guard was always the minimum
        combine = getattr(self, "combine_", "min")
        if combine == "deep_sad":
            (l0, s0) = self.score_scale_[0]
            return (-np.log(np.maximum(self._distances(X), _TINY)) - l0) / s0
        return _combine(combine, *self._standard_scores(X))

    def _network_input_shape(self, nd_shape, n_features):
        if self.input_shape is None and nd_shape is None:
            if self.network == "lenet":
                raise ValueError("network='lenet' needs input_shape=(C, H, W) or 4-D X.")
            return None
        return resolve_input_shape(self.input_shape, nd_shape, n_features, "channels")

    def _make_network(self, n_features, shape, gen):
        kind = self.network
        if isinstance(kind, str):
            if kind == "auto":
                kind = "lenet" if shape is not None else "mlp"
            if kind == "lenet":
                kwargs = dict(input_shape=shape, conv_channels=tuple(self.conv_channels),
                              kernel_size=self.kernel_size, rep_dim=self.rep_dim,
                              batch_norm=self.batch_norm)
            else:
                kwargs = dict(n_features=n_features, hidden_sizes=tuple(self.hidden_sizes),
                              rep_dim=self.rep_dim, batch_norm=self.batch_norm)
            spec = {"kind": kind, "kwargs": kwargs}
            return build_network(spec, gen, "cpu"), spec
        if isinstance(kind, torch.nn.Module):
            return copy.deepcopy(kind), None
        # A user callable draws from the global RNG: fork it so it is restored.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
            net = kind(n_features)
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"network callable returned {type(net).__name__}, "
                            "not a torch.nn.Module.")
        return net, None

    def _init_center(self, net, X_train, y_train):
        """Mean network output over G's and unlabelled samples, with the eps rule."""
        net.eval()
        total = None
        normal = torch.nonzero(y_train != -1).flatten()
        with torch.no_grad():
            for start in range(0, normal.numel(), self.batch_size):
                xb = X_train[normal[start:start + self.batch_size]].to(self.device_)
                s = net(xb).double().sum(0)
                total = s if total is None else total + s
        c = total / normal.numel()
        small = c.abs() < self.eps
        c[small & (c < 0)] = -self.eps
        c[small & (c >= 0)] = self.eps
        return c.float()

    def _train(self, net, center, X_train, y_train, gen):
        optimizer = torch.optim.Adam(net.parameters(), lr=self.lr,
                                     weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(self.lr_milestones), gamma=self.lr_gamma)
        n = X_train.shape[0]
        bs = min(self.batch_size, n)
        # Batch norm fails on a batch of one: drop the incomplete last batch.
        n_batches = n // bs if has_batch_norm(net) else math.ceil(n / bs)
        history = {"loss": [], "lr": [], "time": []}
        net.train()
        with self._progress() as bar:
            for epoch in range(self.n_epochs):
                t0 = time.perf_counter()
                perm = torch.randperm(n, generator=gen)
                total, count = 0.0, 0
                for b in range(n_batches):
                    idx = perm[b * bs:(b + 1) * bs]
                    xb = X_train[idx].to(self.device_)
                    yb = y_train[idx].to(self.device_)
                    dist = torch.sum((net(xb) - center) ** 2, dim=1)
                    losses = torch.where(yb == -1, self.eta / (dist + 1e-6), dist)
                    loss = losses.mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * idx.numel()
                    count += idx.numel()
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()  # after optimizer.step(), unlike the reference code
                mean_loss = total / count
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(
                        f"Training loss became {mean_loss} at epoch {epoch + 1}; "
                        "lower lr or standardise the features.")
                history["loss"].append(mean_loss)
                history["lr"].append(lr)
                history["time"].append(time.perf_counter() - t0)
                if bar is not None:
                    bar.set_postfix(loss=f"{mean_loss:.4g}", lr=f"{lr:.3g}", refresh=False)
                    bar.update(1)
                    if self.verbose > 1:
                        bar.write(f"[FLIPADDetector] epoch {epoch + 1}/{self.n_epochs} "
                                  f"loss {mean_loss:.6g} lr {lr:.3g} "
                                  f"({history['time'][-1]:.2f}s)", file=sys.stdout)
        return history

    def _progress(self):
        """A tqdm bar over the epochs when ``verbose`` (tqdm imported only then)."""
        if not self.verbose:
            return contextlib.nullcontext()
        from tqdm.auto import tqdm

        return tqdm(total=self.n_epochs, desc="Deep SAD training", unit="epoch",
                    file=sys.stderr)

    # -------------------------------------------------------------- scoring
    def _distances(self, X):
        """Squared distance to the centre, returned as float64, one per sample; with
        several networks the mean of each one's divided by its ``distance_scales_``."""
        scales = getattr(self, "distance_scales_", None)
        if scales is None:
            return self._member_distances(self.network_, self.center_, X)
        return np.mean([self._member_distances(net, c, X) / m
                        for (net, c), m in zip(self._members(), scales)], axis=0)

    def _member_distances(self, net, center, X):
        """One network's squared distance to its centre, float64, one per sample."""
        p = next(net.parameters())
        c = torch.as_tensor(center, dtype=p.dtype, device=p.device)
        bs = self.batch_size
        # float32 kernels may change with the batch shape: always use full chunks.
        pad = p.dtype != torch.float64
        out = np.empty(X.shape[0], dtype=np.float64)
        with torch.no_grad():
            for start in range(0, X.shape[0], bs):
                xb = torch.tensor(X[start:start + bs], dtype=p.dtype)
                m = xb.shape[0]
                if pad and m < bs:
                    xb = torch.cat([xb, xb.new_zeros((bs - m, xb.shape[1]))])
                d = torch.sum((net(xb.to(p.device)) - c) ** 2, dim=1)[:m]
                out[start:start + m] = d.double().cpu().numpy()
        return out

    def _check_X(self, X):
        check_is_fitted(self)
        X, nd_shape = flatten_images(X)
        check_image_shape(nd_shape, self.input_shape_, type(self).__name__)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def score_samples(self, X):
        """How much like G each sample is (higher = more like G).

        With the one-class guard (the default), the combination ``combine_``
        of Deep SAD's and the guard's standardised scores (see
        ``score_scale_``); with ``one_class=None``, the negative squared
        distance to the centre.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        scores : ndarray of shape (n_samples,), float64

        Raises
        ------
        FloatingPointError
            If a score is NaN or infinite (the network overflows: a corrupted
            detector, or features far outside its training): such a score would
            read as "not G", a verdict the sample did not give.  So do
            ``decision_function``, ``predict`` and ``pvalues``.
        """
        return self._scores(self._check_X(X))

    @property
    def validation_distances_(self):
        """Deprecated: the sorted held-out distances; use ``-validation_scores_``."""
        scores = self.validation_scores_  # AttributeError (no warning) when unfitted
        warnings.warn("validation_distances_ is deprecated: use validation_scores_ "
                      "(scores, higher = more like G; the distances are "
                      "-validation_scores_).", FutureWarning, stacklevel=2)
        return -scores[::-1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.pop("network_", None)
        extra = state.pop("extra_networks_", None)
        if net is not None:
            spec = state.get("_network_spec")
            if spec is not None:
                # Built-in network: numpy arrays + the spec, nothing device-bound.
                state["_network_state"] = _state_arrays(net)
                if extra:
                    state["_extra_network_states"] = [_state_arrays(n) for n in extra]
            else:
                state["_network_module"] = copy.deepcopy(net).cpu()
                if extra:
                    state["_extra_network_modules"] = [copy.deepcopy(n).cpu() for n in extra]
        return state

    def _file_format_version(self):
        """The oldest format of :mod:`~flipad_sklearn.persistence` that holds this
        detector: 2 for several networks (a version-1 reader would score the first
        alone), else 1."""
        return 2 if getattr(self, "extra_networks_", None) else 1

    def __setstate__(self, state):
        state = dict(state)
        # pickled before the parameter existed: one network, as it was trained
        state.setdefault("n_networks", 1)
        net_state = state.pop("_network_state", None)
        module = state.pop("_network_module", None)
        extra_states = state.pop("_extra_network_states", None)
        extra_modules = state.pop("_extra_network_modules", None)
        if net_state is not None:
            state["network_"] = rebuild_network(state["_network_spec"], net_state).eval()
        elif module is not None:
            state["network_"] = module.eval()
        if extra_states is not None:
            state["extra_networks_"] = [rebuild_network(state["_network_spec"], st).eval()
                                        for st in extra_states]
        elif extra_modules is not None:
            state["extra_networks_"] = [m.eval() for m in extra_modules]
        elif "extra_centers_" in state:
            state["extra_networks_"] = []
        super().__setstate__(state)


def _state_arrays(net):
    """A network's state as numpy arrays on the CPU (nothing device-bound)."""
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def _combine(rule, deep, other):
    """The combined standardised score (higher = more like G)."""
    return 0.5 * (deep + other) if rule == "mean" else np.minimum(deep, other)


def _to_tensor(X, dtype):
    """Tensor view of a numpy array when possible (no copy for large inputs)."""
    if X.flags.writeable and X.flags.c_contiguous and X.dtype == np.float32:
        return torch.from_numpy(X)
    return torch.tensor(X, dtype=dtype)
