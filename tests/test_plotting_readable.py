"""The displays read at a glance: one colour per source across panels, no
curve hidden behind another, labelled colour bars, nothing clipped when saved."""
import io

import numpy as np
import pytest

from flipad_sklearn.plotting import (
    ActivationMapDisplay,
    AttributionRocDisplay,
    PredictionSetDisplay,
    ScoreHistogramDisplay,
)

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")
from matplotlib.colors import to_rgb  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _demo_like(seed=0):
    """G near +5, two generators near -10, real data far away near -1000, all
    separated from G (every AUC is 1): the demo's picture."""
    rng = np.random.default_rng(seed)
    y = np.array(["G"] * 200 + ["LSGAN"] * 200 + ["real"] * 200 + ["DCGAN"] * 200)
    s = np.r_[rng.normal(5, 1, 200), rng.normal(-10, 2, 200),
              rng.normal(-1500, 30, 200), rng.normal(-8, 2, 200)]
    return y, s


def test_one_colour_per_source_in_histogram_and_roc():
    y, s = _demo_like()
    fig, (a, b) = plt.subplots(1, 2)
    hist = ScoreHistogramDisplay.from_predictions(y, s, threshold=0.0, ax=a,
                                                  xscale="symlog")
    roc = AttributionRocDisplay.from_predictions(y, s, pos_label="G", ax=b)
    hist_colour = {name: to_rgb(p[0].get_facecolor())
                   for name, p in zip(hist.source_names, hist.patches_)}
    roc_colour = {name: to_rgb(line.get_color())
                  for name, line in zip(roc.source_names, roc.lines_)}
    assert set(roc_colour) == set(hist_colour) - {"G"}
    for name, colour in roc_colour.items():
        assert colour == hist_colour[name], name
    assert len(set(hist_colour.values())) == len(hist_colour)     # all distinct
    # a colour given by name wins in both
    hist.plot(colors={"real": "black"})
    roc.plot(colors={"real": "black"})
    i, j = hist.source_names.index("real"), roc.source_names.index("real")
    assert to_rgb(hist.patches_[i][0].get_facecolor()) == (0.0, 0.0, 0.0)
    assert to_rgb(roc.lines_[j].get_color()) == (0.0, 0.0, 0.0)


def test_roc_curves_at_auc_one_stay_apart():
    y, s = _demo_like()
    roc = AttributionRocDisplay.from_predictions(y, s, pos_label="G")
    assert roc.roc_auc == [1.0, 1.0, 1.0]
    styles = [(line.get_linestyle(), line.get_linewidth()) for line in roc.lines_]
    assert len(set(styles)) == len(styles)
    widths = [w for _, w in styles]
    zorders = [line.get_zorder() for line in roc.lines_]
    # the wider curves lie beneath the thinner ones
    assert np.argsort(widths).tolist() == np.argsort(zorders)[::-1].tolist()


def test_histogram_share_is_readable_for_a_far_source():
    """A source far away on a symlog axis must not shrink to a sliver: each
    source's bars sum to 1 whatever the bins' widths in score units."""
    y, s = _demo_like()
    hist = ScoreHistogramDisplay.from_predictions(y, s, threshold=0.0, xscale="symlog")
    for name, patches in zip(hist.source_names, hist.patches_):
        heights = np.array([p.get_height() for p in patches])
        assert heights.sum() == pytest.approx(1.0), name
    i = hist.source_names.index("real")
    real_peak = max(p.get_height() for p in hist.patches_[i])
    g_peak = max(p.get_height() for p in hist.patches_[0])
    assert real_peak > 0.25 * g_peak                   # was 1/300 of it as a density
    assert hist.ax_.get_ylabel() == "share of samples per bin"
    hist.plot(yscale="log")
    assert hist.ax_.get_yscale() == "log"
    with pytest.raises(ValueError, match="yscale"):
        hist.plot(yscale="symlog")


def test_activation_map_colour_bar_is_labelled():
    rng = np.random.default_rng(0)
    A = np.abs(rng.normal(size=(20, 3, 4, 4)))
    y = np.r_[np.ones(10), -np.ones(10)].astype(int)
    disp = ActivationMapDisplay.from_predictions(A, y)
    assert "mean recovered activation" in disp.colorbar_.ax.get_ylabel()
    assert "mean over channels" in disp.colorbar_.ax.get_ylabel()
    one = ActivationMapDisplay.from_predictions(A, y, channels=1)
    assert "channel 1" in one.colorbar_.ax.get_ylabel()
    own = ActivationMapDisplay.from_predictions(A, y, colorbar_label="z")
    assert own.colorbar_.ax.get_ylabel() == "z"


def _clipped_by(fig):
    """How far (in pixels) the drawn labels, titles and ticks reach beyond
    the edges of the saved figure (0 everywhere: nothing clipped)."""
    fig.savefig(io.BytesIO(), format="png", dpi=80)      # as a user saves it
    tight = fig.get_tightbbox(fig.canvas.get_renderer())      # inches
    box, dpi = fig.bbox_inches, fig.dpi
    return {"left": max(0.0, box.x0 - tight.x0) * dpi,
            "bottom": max(0.0, box.y0 - tight.y0) * dpi,
            "right": max(0.0, tight.x1 - box.x1) * dpi,
            "top": max(0.0, tight.y1 - box.y1) * dpi}


def test_nothing_clipped_when_saved():
    y, s = _demo_like()
    names = ["G1", "G2"]
    ys = np.array(["G1"] * 50 + ["G2"] * 40 + ["real"] * 30)
    sets = np.zeros((len(ys), 2), dtype=bool)
    sets[ys == "G1", 0] = True
    sets[ys == "G2", 1] = True
    rng = np.random.default_rng(0)
    A = np.abs(rng.normal(size=(20, 3, 6, 6)))
    ya = np.r_[np.ones(10), -np.ones(10)].astype(int)
    displays = [
        ScoreHistogramDisplay.from_predictions(y, s, threshold=0.0, xscale="symlog"),
        AttributionRocDisplay.from_predictions(y, s, pos_label="G", threshold=0.0),
        PredictionSetDisplay.from_predictions(ys, sets, names,
                                              target={"G1": 0.95, "G2": 0.95}),
        ActivationMapDisplay.from_predictions(A, ya),
    ]
    for disp in displays:
        clipped = _clipped_by(disp.figure_)
        assert max(clipped.values()) < 1.0, (type(disp).__name__, clipped)
