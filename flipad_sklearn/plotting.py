"""Plots for attribution, as display objects in scikit-learn's style.

Each display is built with ``from_estimator`` (from a fitted estimator or
pipeline and data) or ``from_predictions`` (from values you computed
yourself), draws itself on ``plot(ax=...)`` and keeps the matplotlib objects
in ``figure_`` and ``ax_``:

* :class:`ActivationMapDisplay`: the mean recovered activation of each
  source (channel-mean heatmaps side by side, as in FLIPAD's figures);
* :class:`ScoreHistogramDisplay`: the detector's scores per source with its
  threshold;
* :class:`AttributionRocDisplay`: one ROC curve per other source against
  the generator's own samples;
* :class:`PredictionSetDisplay`: for several owned models
  (:class:`~flipad_sklearn.detection.multi.OwnedModelsAttributor`), the sizes of the
  prediction sets per true source and each model's coverage.

matplotlib is an optional dependency (``pip install flipad_sklearn[plot]``);
this module imports without it and raises an :class:`ImportError` that says
so when a plot is requested.

Sources are given as one label per sample (``y``).  With the package's
convention (``1`` = made by G, ``-1`` = known not made by G, ``0`` =
unlabelled) the labels are named "G", "not G" and "unlabelled"; any other
labels (e.g. ``"G"``, ``"real"``, ``"wgan_gp"``) are shown as they are, or
renamed with ``source_names={label: name}``.
"""

import numpy as np
from sklearn.metrics import auc, roc_curve
from sklearn.utils.validation import check_is_fitted, column_or_1d

__all__ = ["ActivationMapDisplay", "AttributionRocDisplay", "PredictionSetDisplay",
           "ScoreHistogramDisplay"]

_DEFAULT_NAMES = {1: "G", -1: "not G", 0: "unlabelled"}


def check_matplotlib(caller):
    """Import matplotlib.pyplot, with an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised without matplotlib
        raise ImportError(
            f"{caller} needs matplotlib, an optional dependency of flipad_sklearn: "
            "install it with `pip install matplotlib` (or "
            "`pip install flipad_sklearn[plot]`)."
        ) from exc
    return plt


def _source_order(y):
    """Unique labels: G first (1 or "G"), then the others in sorted order."""
    labels = list(np.unique(y))
    labels.sort(key=lambda v: (0 if _is_label(v, 1) or str(v) == "G" else 1, str(v)))
    return labels


def _is_label(v, target):
    try:
        return bool(v == target) and not isinstance(v, (str, np.str_))
    except (TypeError, ValueError):
        return False


def _name(label, source_names):
    if source_names is not None and label in source_names:
        return str(source_names[label])
    if not isinstance(label, (str, np.str_)):
        try:
            key = int(label)
        except (TypeError, ValueError):
            key = None
        if key is not None and key == label and key in _DEFAULT_NAMES:
            return _DEFAULT_NAMES[key]
    return str(label)


# two lines: one fits along the colour bar of a 3-inch-high figure
_MAP_LABELS = {
    "mean": "mean recovered activation\n(mean over channels)",
    "abs_mean": "mean |recovered activation|\n(mean over channels)",
    "max": "mean recovered activation\n(max over channels)",
}


def _source_colors(names, colors=None, *, skip_first=0):
    """One colour per source, the same in every display.

    Sources come in :func:`_source_order` (G first); the ``k``-th gets
    matplotlib's ``"C{k}"``, so G is ``"C0"`` in the score histogram and the
    other sources keep their colour in the ROC panel, which has no curve for
    G (``skip_first=1``).  ``colors`` (``{source name: colour}``) overrides.
    """
    colors = dict(colors or {})
    return [colors.get(name, f"C{(i + skip_first) % 10}") for i, name in enumerate(names)]


def _new_figure(plt, figsize=None, ncols=1):
    """A figure whose labels are laid out inside it (constrained layout), so
    that nothing is clipped when it is saved."""
    fig, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False,
                             layout="constrained")
    return fig, list(axes.ravel())


def _axes_list(ax, n, plt, figsize):
    """``n`` axes: the given ones (one, or a sequence of ``n``) or a new row."""
    if ax is None:
        return _new_figure(plt, figsize, n)
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != n:
        raise ValueError(f"ax must hold {n} axes (one per source), got {len(axes)}.")
    return axes[0].figure, axes


def _single_axes(ax, plt):
    if ax is None:
        fig, (ax,) = _new_figure(plt)
        return fig, ax
    return ax.figure, ax


def _final_step(estimator):
    """The last step of a pipeline (or the estimator itself)."""
    steps = getattr(estimator, "steps", None)
    return steps[-1][1] if steps else estimator


def _response(estimator, X, response_method):
    """Scores of ``X`` and the threshold on the same scale."""
    check_is_fitted(_final_step(estimator))
    if response_method not in ("decision_function", "score_samples", "pvalues"):
        raise ValueError(
            "response_method must be 'decision_function', 'score_samples' or "
            f"'pvalues', got {response_method!r}.")
    if response_method == "pvalues":
        final = _final_step(estimator)
        if final is estimator:
            scores = estimator.pvalues(X)
        else:
            scores = final.pvalues(estimator[:-1].transform(X))
        threshold = getattr(final, "fnr", None)
    else:
        scores = getattr(estimator, response_method)(X)
        if response_method == "decision_function":
            threshold = 0.0
        else:
            threshold = getattr(_final_step(estimator), "offset_", None)
    return np.asarray(scores, dtype=np.float64), threshold


def _estimator_name(estimator):
    return type(_final_step(estimator)).__name__


# --------------------------------------------------------------------------
class ActivationMapDisplay:
    """Mean recovered activation per source, as channel-mean heatmaps.

    FLIPAD's figures show that the activations recovered from G's own
    samples look different from those recovered from real data or other
    generators (e.g. sparser, or with G's typical spatial pattern).  This
    display shows, for each source, the mean over its samples of the
    recovered activation, averaged over channels.  1-D activations (a
    ``Linear`` final layer) are shown as a one-row strip.

    Use :meth:`from_estimator` or :meth:`from_predictions` to build it.

    Parameters
    ----------
    maps : ndarray of shape (n_sources, H, W)
        One heatmap per source.
    source_names : list of str
        Name of each source.
    estimator_name : str or None, default=None

    Attributes
    ----------
    figure_ : matplotlib.figure.Figure
    ax_ : ndarray of matplotlib Axes, shape (n_sources,)
    images_ : list of matplotlib.image.AxesImage
    colorbar_ : matplotlib.colorbar.Colorbar or None
    """

    def __init__(self, maps, source_names, *, estimator_name=None):
        self.maps = np.asarray(maps, dtype=np.float64)
        self.source_names = list(source_names)
        self.estimator_name = estimator_name

    @classmethod
    def from_predictions(cls, activations, y=None, *, activation_shape=None,
                         source_names=None, channels="mean", ax=None, **plot_kwargs):
        """Build and plot from activations you recovered yourself.

        Parameters
        ----------
        activations : array-like of shape (n_samples, n_activations) or \
                (n_samples, C, H, W)
            Recovered activations (e.g. ``FinalLayerInverter.transform(X)``).
        y : array-like of shape (n_samples,), default=None
            Source of each sample; None: one source.
        activation_shape : tuple of int, default=None
            ``(C, H, W)`` (or ``(K,)``) of one activation; needed for flat
            convolutional activations.
        source_names : dict, default=None
            ``{label: name}`` for the panel titles.
        channels : {"mean", "abs_mean", "max"} or int, default="mean"
            How channels are reduced to one map: their mean, mean absolute
            value, maximum, or one channel's index.
        ax : matplotlib Axes or sequence of Axes, default=None
            One per source; None creates a row of them.
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display : ActivationMapDisplay
        """
        A = np.asarray(activations, dtype=np.float64)
        n = A.shape[0]
        if A.ndim == 2:
            shape = tuple(activation_shape) if activation_shape is not None else (A.shape[1],)
            if int(np.prod(shape)) != A.shape[1]:
                raise ValueError(f"activation_shape {shape} does not match "
                                 f"{A.shape[1]} activations per sample.")
            A = A.reshape((n,) + shape)
        if A.ndim == 2:                     # (n, K): one strip
            A = A[:, None, None, :]
        elif A.ndim == 3:                   # (n, H, W): one channel
            A = A[:, None]
        if A.ndim != 4:
            raise ValueError(f"activations must be 2-D, 3-D or 4-D, got shape {A.shape}.")
        y = np.zeros(n, dtype=int) + 1 if y is None else column_or_1d(y)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} labels for {n} samples.")
        maps, names = [], []
        for label in _source_order(y):
            mean = A[y == label].mean(axis=0)              # (C, H, W)
            if isinstance(channels, str):
                if channels == "mean":
                    m = mean.mean(axis=0)
                elif channels == "abs_mean":
                    m = np.abs(mean).mean(axis=0)
                elif channels == "max":
                    m = mean.max(axis=0)
                else:
                    raise ValueError("channels must be 'mean', 'abs_mean', 'max' or "
                                     f"an int, got {channels!r}.")
            else:
                m = mean[int(channels)]
            maps.append(m)
            names.append(_name(label, source_names))
        plot_kwargs.setdefault("colorbar_label", "mean recovered activation"
                               if A.shape[1] == 1 else _MAP_LABELS.get(
                                   channels, f"mean recovered activation\n(channel {channels})"))
        disp = cls(np.stack(maps), names)
        return disp.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y=None, *, source_names=None, channels="mean",
                       ax=None, **plot_kwargs):
        """Recover the activations of ``X`` with a fitted inverter and plot them.

        Parameters
        ----------
        estimator : FinalLayerInverter or Pipeline
            A fitted :class:`~flipad_sklearn.FinalLayerInverter`, or a fitted
            pipeline containing one (the steps before it are applied first).
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples (generator outputs, real data, ...).
        y : array-like of shape (n_samples,), default=None
            Source of each sample.
        source_names, channels, ax, **plot_kwargs
            As in :meth:`from_predictions`.

        Returns
        -------
        display : ActivationMapDisplay
        """
        from .inversion import FinalLayerInverter

        steps = getattr(estimator, "steps", None)
        if steps is None:
            inv, pre = estimator, None
        else:
            idx = [i for i, (_, s) in enumerate(steps) if isinstance(s, FinalLayerInverter)]
            if not idx:
                raise ValueError("The pipeline holds no FinalLayerInverter step.")
            inv = steps[idx[0]][1]
            pre = estimator[:idx[0]] if idx[0] > 0 else None
        if not isinstance(inv, FinalLayerInverter):
            raise TypeError("estimator must be a FinalLayerInverter or a Pipeline "
                            f"containing one, got {type(inv).__name__}.")
        check_is_fitted(inv, "operator_")
        Xt = pre.transform(X) if pre is not None else X
        Z = inv.transform(Xt)
        disp = cls.from_predictions(Z, y, activation_shape=inv.activation_shape_,
                                    source_names=source_names, channels=channels,
                                    ax=None if ax is None else ax, **plot_kwargs)
        disp.estimator_name = "FinalLayerInverter"
        return disp

    def plot(self, ax=None, *, cmap="viridis", shared_scale=True, colorbar=True,
             colorbar_label="mean recovered activation", figsize=None):
        """Draw one heatmap per source.

        Parameters
        ----------
        ax : matplotlib Axes or sequence of Axes, default=None
            One per source; None creates a row of them.
        cmap : str, default="viridis"
        shared_scale : bool, default=True
            One colour scale for all sources (so that they compare).
        colorbar : bool, default=True
            Add a colour bar (for the shared scale).
        colorbar_label : str, default="mean recovered activation"
            What the colours measure; :meth:`from_predictions` and
            :meth:`from_estimator` name the channel reduction too.
        figsize : tuple, default=None
            Size of a new figure; default ``(3 * n_sources, 3)``.

        Returns
        -------
        display : ActivationMapDisplay
        """
        plt = check_matplotlib("ActivationMapDisplay.plot")
        n = self.maps.shape[0]
        fig, axes = _axes_list(ax, n, plt, figsize or (3.0 * n + 0.8, 3.0))
        vmin = vmax = None
        if shared_scale:
            vmin, vmax = float(self.maps.min()), float(self.maps.max())
        self.images_ = []
        for a, m, name in zip(axes, self.maps, self.source_names):
            im = a.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax,
                          aspect="auto" if m.shape[0] == 1 else "equal",
                          interpolation="nearest")
            a.set_title(name)
            a.set_xticks([])
            a.set_yticks([])
            self.images_.append(im)
        self.colorbar_ = None
        if colorbar and shared_scale and n:
            self.colorbar_ = fig.colorbar(self.images_[-1], ax=axes, shrink=0.8)
            self.colorbar_.set_label(colorbar_label)
        self.figure_, self.ax_ = fig, np.asarray(axes, dtype=object)
        return self


# --------------------------------------------------------------------------
class ScoreHistogramDisplay:
    """Histogram of the detector's scores per source, with its threshold.

    Use :meth:`from_estimator` or :meth:`from_predictions` to build it.

    Parameters
    ----------
    scores : list of ndarray
        The scores of each source.
    source_names : list of str
    threshold : float or None, default=None
        Drawn as a vertical line (samples below it are rejected as "not G";
        for p-values, those at or below it).
    score_name : str, default="decision function"
        x-axis label.
    estimator_name : str or None, default=None

    Attributes
    ----------
    figure_ : matplotlib.figure.Figure
    ax_ : matplotlib Axes
    patches_ : list
        The histogram patches of each source.
    threshold_line_ : matplotlib.lines.Line2D or None
    """

    def __init__(self, scores, source_names, *, threshold=None,
                 score_name="decision function", estimator_name=None):
        self.scores = [np.asarray(s, dtype=np.float64) for s in scores]
        self.source_names = list(source_names)
        self.threshold = threshold
        self.score_name = score_name
        self.estimator_name = estimator_name

    @classmethod
    def from_predictions(cls, y, scores, *, threshold=None, source_names=None,
                         score_name="score", ax=None, **plot_kwargs):
        """Build and plot from scores you computed yourself.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            Source of each sample.
        scores : array-like of shape (n_samples,)
            Higher = more like G (e.g. ``decision_function``).
        threshold : float, default=None
            Decision threshold on the same scale (0 for ``decision_function``).
        source_names : dict, default=None
            ``{label: name}``.
        score_name : str, default="score"
        ax : matplotlib Axes, default=None
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display : ScoreHistogramDisplay
        """
        y = column_or_1d(y)
        scores = column_or_1d(scores).astype(np.float64)
        if y.shape[0] != scores.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for {scores.shape[0]} scores.")
        labels = _source_order(y)
        disp = cls([scores[y == lab] for lab in labels],
                   [_name(lab, source_names) for lab in labels],
                   threshold=threshold, score_name=score_name)
        return disp.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y, *, response_method="decision_function",
                       source_names=None, ax=None, **plot_kwargs):
        """Score ``X`` with a fitted detector (or pipeline) and plot per source.

        Parameters
        ----------
        estimator : FLIPADDetector, Pipeline or any fitted outlier detector
        X : array-like
        y : array-like of shape (n_samples,)
            Source of each sample.
        response_method : {"decision_function", "score_samples", "pvalues"}, \
                default="decision_function"
            The threshold is 0, the detector's ``offset_``, or its ``fnr``.
        source_names, ax, **plot_kwargs
            As in :meth:`from_predictions`.

        Returns
        -------
        display : ScoreHistogramDisplay
        """
        scores, threshold = _response(estimator, X, response_method)
        disp = cls.from_predictions(y, scores, threshold=threshold,
                                    source_names=source_names,
                                    score_name=response_method.replace("_", " "),
                                    ax=ax, **plot_kwargs)
        disp.estimator_name = _estimator_name(estimator)
        return disp

    def plot(self, ax=None, *, bins=30, density=True, alpha=0.3, xscale="linear",
             yscale="linear", colors=None):
        """Draw the histograms and the threshold line.

        Each source is a lightly filled histogram with an outline in its
        colour, so that a source behind another stays visible; the colours
        are those of :class:`AttributionRocDisplay` for the same sources.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
        bins : int, default=30
            Bins over the range of all scores (shared by the sources).
        density : bool, default=True
            Each source's share of samples per bin (each histogram sums to
            1, so sources of different sizes compare, on either x scale);
            False: counts.
        alpha : float, default=0.3
            Opacity of the fill (the outlines are opaque).
        xscale : {"linear", "symlog"}, default="linear"
            ``"symlog"`` bins and draws the scores on a symmetric log axis:
            readable when far-away sources (e.g. real data) would squash
            the sources near the threshold into one bin.
        yscale : {"linear", "log"}, default="linear"
            ``"log"``: a source spread thinly over a wide range (its density
            a sliver next to a concentrated one) stays readable.
        colors : dict, default=None
            ``{source name: colour}``; default: ``"C0"`` for G, then
            ``"C1"``, ``"C2"``, ... in the order of the sources.

        Returns
        -------
        display : ScoreHistogramDisplay
        """
        plt = check_matplotlib("ScoreHistogramDisplay.plot")
        fig, ax = _single_axes(ax, plt)
        finite = [s[np.isfinite(s)] for s in self.scores]
        allv = np.concatenate(finite) if finite else np.empty(0)
        if xscale not in ("linear", "symlog"):
            raise ValueError(f"xscale must be 'linear' or 'symlog', got {xscale!r}.")
        if yscale not in ("linear", "log"):
            raise ValueError(f"yscale must be 'linear' or 'log', got {yscale!r}.")
        if xscale == "symlog":
            # equal-width bins in sign(s) * log10(1 + |s|), mapped back
            t = np.sign(allv) * np.log10(1.0 + np.abs(allv)) if allv.size else [0.0, 1.0]
            te = np.histogram_bin_edges(t, bins=bins)
            edges = np.sign(te) * (10.0 ** np.abs(te) - 1.0)
            ax.set_xscale("symlog", linthresh=1.0)
        else:
            edges = np.histogram_bin_edges(allv if allv.size else [0.0, 1.0], bins=bins)
        self.patches_ = []
        for s, name, color in zip(finite, self.source_names,
                                  _source_colors(self.source_names, colors)):
            # share per bin, not density: on a symlog axis the far bins are
            # wide in score units and a density there is a sliver
            weights = np.full(s.size, 1.0 / max(s.size, 1)) if density else None
            _, _, patches = ax.hist(s, bins=edges, weights=weights, alpha=alpha,
                                    color=color, label=f"{name} (n={s.size})")
            ax.hist(s, bins=edges, weights=weights, color=color, histtype="step",
                    linewidth=1.6)
            self.patches_.append(patches)
        if yscale == "log":
            ax.set_yscale("log")
        self.threshold_line_ = None
        if self.threshold is not None:
            self.threshold_line_ = ax.axvline(self.threshold, color="k", linestyle="--",
                                              label=f"threshold ({self.threshold:.3g})")
        ax.set_xlabel(self.score_name + " (higher = more like G)")
        ax.set_ylabel("share of samples per bin" if density else "count")
        ax.legend()
        self.figure_, self.ax_ = fig, ax
        return self


# --------------------------------------------------------------------------
class AttributionRocDisplay:
    """ROC curve of G's own samples against each other source.

    For each source other than G, the samples of G are the positives and
    that source's samples the negatives; higher scores mean "more like G".
    An open-world detector should have a high AUC against every source,
    including those it never saw in training.

    Use :meth:`from_estimator` or :meth:`from_predictions` to build it.

    Parameters
    ----------
    fpr, tpr : list of ndarray
        One curve per other source.
    roc_auc : list of float
    source_names : list of str
        The other sources.
    pos_label_name : str, default="G"
    operating_points : list of (float, float) or None, default=None
        ``(fpr, tpr)`` at the detector's threshold, per source.
    estimator_name : str or None, default=None

    Attributes
    ----------
    figure_ : matplotlib.figure.Figure
    ax_ : matplotlib Axes
    lines_ : list of matplotlib.lines.Line2D
    chance_level_ : matplotlib.lines.Line2D or None
    """

    def __init__(self, fpr, tpr, roc_auc, source_names, *, pos_label_name="G",
                 operating_points=None, estimator_name=None):
        self.fpr = list(fpr)
        self.tpr = list(tpr)
        self.roc_auc = list(roc_auc)
        self.source_names = list(source_names)
        self.pos_label_name = pos_label_name
        self.operating_points = operating_points
        self.estimator_name = estimator_name

    @classmethod
    def from_predictions(cls, y, scores, *, pos_label=1, threshold=None, source_names=None,
                         ax=None, **plot_kwargs):
        """Build and plot from scores you computed yourself.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            Source of each sample; ``pos_label`` marks G's own samples.
        scores : array-like of shape (n_samples,)
            Higher = more like G.
        pos_label : int or str, default=1
        threshold : float, default=None
            Mark the operating point ``scores >= threshold`` on each curve.
        source_names : dict, default=None
            ``{label: name}``.
        ax : matplotlib Axes, default=None
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display : AttributionRocDisplay
        """
        y = column_or_1d(y)
        scores = column_or_1d(scores).astype(np.float64)
        if y.shape[0] != scores.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for {scores.shape[0]} scores.")
        pos = y == pos_label
        if not pos.any():
            raise ValueError(f"y holds no sample of G (pos_label={pos_label!r}).")
        others = [lab for lab in _source_order(y) if not (lab == pos_label)]
        if not others:
            raise ValueError("y holds only samples of G: a ROC curve needs another source.")
        fprs, tprs, aucs, names, points = [], [], [], [], []
        for lab in others:
            mask = pos | (y == lab)
            fpr, tpr, _ = roc_curve(pos[mask], scores[mask])
            fprs.append(fpr)
            tprs.append(tpr)
            aucs.append(float(auc(fpr, tpr)))
            names.append(_name(lab, source_names))
            if threshold is not None:
                accepted = scores >= threshold
                points.append((float(accepted[y == lab].mean()),
                               float(accepted[pos].mean())))
        disp = cls(fprs, tprs, aucs, names, pos_label_name=_name(pos_label, source_names),
                   operating_points=points if threshold is not None else None)
        return disp.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y, *, pos_label=1,
                       response_method="decision_function", source_names=None, ax=None,
                       **plot_kwargs):
        """Score ``X`` with a fitted detector (or pipeline) and plot the curves.

        Parameters
        ----------
        estimator : FLIPADDetector, Pipeline or any fitted outlier detector
        X : array-like
        y : array-like of shape (n_samples,)
            Source of each sample.
        pos_label : int or str, default=1
            The label of G's own samples.
        response_method : {"decision_function", "score_samples", "pvalues"}, \
                default="decision_function"
        source_names, ax, **plot_kwargs
            As in :meth:`from_predictions`.

        Returns
        -------
        display : AttributionRocDisplay
        """
        scores, threshold = _response(estimator, X, response_method)
        if response_method == "pvalues" and threshold is not None:
            # predict rejects p <= fnr; accepted means p > fnr
            threshold = np.nextafter(threshold, np.inf)
        disp = cls.from_predictions(y, scores, pos_label=pos_label, threshold=threshold,
                                    source_names=source_names, ax=ax, **plot_kwargs)
        disp.estimator_name = _estimator_name(estimator)
        return disp

    def plot(self, ax=None, *, plot_chance_level=True, colors=None):
        """Draw one curve per other source.

        Curves that coincide (several sources at AUC 1) stay apart: each has
        its own line style and width, the wider drawn beneath, and the
        colour the source has in :class:`ScoreHistogramDisplay`.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
        plot_chance_level : bool, default=True
        colors : dict, default=None
            ``{source name: colour}``; default: ``"C1"``, ``"C2"``, ... in the
            order of the sources (``"C0"`` is G's in the score histogram).

        Returns
        -------
        display : AttributionRocDisplay
        """
        plt = check_matplotlib("AttributionRocDisplay.plot")
        fig, ax = _single_axes(ax, plt)
        self.lines_ = []
        n = len(self.source_names)
        styles = ["-", "--", "-.", (0, (1, 1))]
        for i, (fpr, tpr, a, name, color) in enumerate(zip(
                self.fpr, self.tpr, self.roc_auc, self.source_names,
                _source_colors(self.source_names, colors, skip_first=1))):
            (line,) = ax.plot(fpr, tpr, color=color, linestyle=styles[i % len(styles)],
                              linewidth=1.5 + min(n - 1 - i, 4), zorder=2 + i,
                              label=f"{self.pos_label_name} vs {name} (AUC = {a:.3f})")
            self.lines_.append(line)
            if self.operating_points is not None:
                x, yv = self.operating_points[i]
                ax.plot([x], [yv], "o", color=color, markeredgecolor="k",
                        markersize=6, zorder=10 + i)
        self.chance_level_ = None
        if plot_chance_level:
            (self.chance_level_,) = ax.plot([0, 1], [0, 1], color="0.6", linestyle=":",
                                            zorder=1, label="chance")
        ax.set_xlabel("false positive rate (other source accepted as G)")
        ax.set_ylabel(f"true positive rate ({self.pos_label_name} accepted)")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.legend(loc="lower right")
        self.figure_, self.ax_ = fig, ax
        return self


# --------------------------------------------------------------------------
class PredictionSetDisplay:
    """Prediction-set sizes per true source, and each owned model's coverage.

    For :class:`~flipad_sklearn.detection.multi.OwnedModelsAttributor`: one stacked
    bar per true source (each owned model, then the other sources) with the
    share of its samples whose set holds 0 ("none of mine"), 1, 2, ...
    models; a marker gives each owned model's coverage (the share of its
    samples whose set contains it) against its target ``1 - fnr``.

    Use :meth:`from_estimator` or :meth:`from_predictions` to build it.

    Parameters
    ----------
    set_sizes : dict {source name: ndarray of shape (n_models + 1,)}
        Share of the source's samples with a set of each size.
    coverage : dict {model name: float}
    target : dict {model name: float} or None, default=None
        The guaranteed coverage ``1 - fnr`` of each model.
    counts : dict {source name: int} or None, default=None

    Attributes
    ----------
    figure_ : matplotlib.figure.Figure
    ax_ : matplotlib Axes
    bars_ : list
        The bar containers, one per set size.
    """

    def __init__(self, set_sizes, coverage, *, target=None, counts=None):
        self.set_sizes = {k: np.asarray(v, dtype=np.float64) for k, v in set_sizes.items()}
        self.coverage = dict(coverage)
        self.target = target
        self.counts = counts

    @classmethod
    def from_predictions(cls, y, sets, model_names, *, target=None, ax=None, **plot_kwargs):
        """Build and plot from prediction sets you computed yourself.

        Parameters
        ----------
        y : array-like of shape (n_samples,)
            True source of each sample: a model name or any other label.
        sets : array-like of shape (n_samples, n_models), bool
            ``sets[i, j]``: model ``model_names[j]`` is in the set of sample ``i``.
        model_names : sequence of str
        target : float, dict or None, default=None
            Guaranteed coverage (``1 - fnr``), one for all or one per model.
        ax : matplotlib Axes, default=None
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display : PredictionSetDisplay
        """
        y = np.asarray(column_or_1d(np.asarray(y, dtype=object)), dtype=object)
        sets = np.asarray(sets, dtype=bool)
        names = [str(m) for m in model_names]
        if sets.ndim != 2 or sets.shape != (y.shape[0], len(names)):
            raise ValueError(f"sets must have shape (n_samples, n_models) = "
                             f"({y.shape[0]}, {len(names)}), got {sets.shape}.")
        y = np.array([str(v) for v in y], dtype=object)
        sizes = sets.sum(axis=1)
        others = sorted(set(y.tolist()) - set(names))
        set_sizes, counts, coverage = {}, {}, {}
        for src in [m for m in names if np.any(y == m)] + others:
            mask = y == src
            counts[src] = int(mask.sum())
            set_sizes[src] = np.bincount(sizes[mask], minlength=len(names) + 1) / mask.sum()
        for j, m in enumerate(names):
            if np.any(y == m):
                coverage[m] = float(sets[y == m, j].mean())
        if target is not None and not isinstance(target, dict):
            target = {m: float(target) for m in coverage}
        disp = cls(set_sizes, coverage, target=target, counts=counts)
        return disp.plot(ax=ax, **plot_kwargs)

    @classmethod
    def from_estimator(cls, estimator, X, y, *, alpha=None, ax=None, **plot_kwargs):
        """Predict the sets of ``X`` with a fitted attributor and plot per source.

        Parameters
        ----------
        estimator : OwnedModelsAttributor
            Fitted.
        X : array-like
        y : array-like of shape (n_samples,)
            True source of each sample (a model name, or another label).
        alpha : float or None, default=None
            As in :meth:`~flipad_sklearn.detection.multi.OwnedModelsAttributor.predict_set`;
            the target coverage is ``1 - alpha``, or each model's ``1 - fnr``.
        ax, **plot_kwargs
            As in :meth:`from_predictions`.

        Returns
        -------
        display : PredictionSetDisplay
        """
        check_is_fitted(estimator)
        sets = estimator.predict_set(X, alpha=alpha)
        names = list(estimator.classes_)
        if alpha is not None:
            target = 1.0 - alpha
        else:
            from .detection.conformal import _unwrap

            target = {str(m): 1.0 - _unwrap(estimator.estimators_[m])[0].fnr for m in names}
        return cls.from_predictions(y, sets, names, target=target, ax=ax, **plot_kwargs)

    def plot(self, ax=None, *, cmap="viridis"):
        """Draw the stacked set-size bars and the coverage markers.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
        cmap : str, default="viridis"
            Colours of the set sizes.

        Returns
        -------
        display : PredictionSetDisplay
        """
        plt = check_matplotlib("PredictionSetDisplay.plot")
        fig, ax = _single_axes(ax, plt)
        sources = list(self.set_sizes)
        n_sizes = max(len(v) for v in self.set_sizes.values())
        colors = plt.get_cmap(cmap)(np.linspace(0.15, 0.9, n_sizes))
        x = np.arange(len(sources))
        bottom = np.zeros(len(sources))
        self.bars_ = []
        for size in range(n_sizes):
            h = np.array([self.set_sizes[s][size] if size < len(self.set_sizes[s]) else 0.0
                          for s in sources])
            label = "none of mine" if size == 0 else f"{size} model{'s' if size > 1 else ''}"
            self.bars_.append(ax.bar(x, h, bottom=bottom, color=colors[size], width=0.6,
                                     label=f"set size {size} ({label})"))
            bottom += h
        covered = [i for i, s in enumerate(sources) if s in self.coverage]
        if covered:
            ax.plot(x[covered], [self.coverage[sources[i]] for i in covered], "kD",
                    label="coverage (own model in its set)")
            if self.target:
                for i in covered:
                    t = self.target.get(sources[i])
                    if t is not None:
                        ax.hlines(t, i - 0.35, i + 0.35, colors="k", linestyles="--")
                ax.plot([], [], "k--", label="guaranteed coverage (1 - fnr)")
        labels = [s if self.counts is None else f"{s}\n(n={self.counts[s]})" for s in sources]
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_xlabel("true source")
        ax.set_ylabel("share of samples")
        # room above the bars for the legend
        ax.set_ylim(0, 1.45)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.legend(fontsize="small", loc="upper center", ncol=2)
        self.figure_, self.ax_ = fig, ax
        return self
