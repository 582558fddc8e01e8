"""Progress on long work (issue 30): silent at verbose=0, bars on stderr otherwise."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _layer_and_data():
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    h = torch.relu(torch.randn(48, 8, 4, 4, generator=g))
    with torch.no_grad():
        X = torch.tanh(layer(h)).numpy()
    return layer, X


@pytest.mark.parametrize("verbose", [0, 1])
def test_make_flipad_verbose_reaches_the_inverter_and_the_detector(verbose, capsys):
    # before: make_flipad had no verbose; the detector printed a line per epoch
    from flipad_sklearn.pipeline import make_flipad

    layer, X = _layer_and_data()
    pipe = make_flipad(layer, "tanh", activation_shape=(8, 4, 4), positive=True,
                       fnr=0.1, random_state=0, device="cpu", verbose=verbose,
                       detector_params=dict(n_epochs=2, hidden_sizes=(8,), rep_dim=4,
                                            one_class=None, validation_size=16))
    assert pipe["inv"].verbose == verbose and pipe["det"].verbose == verbose
    pipe.fit(X)
    out = capsys.readouterr()
    assert out.out == ""
    if verbose:
        assert "final-layer inversion" in out.err and "Deep SAD training" in out.err
        assert "2/2" in out.err
    else:
        assert out.err == ""


def test_make_flipad_params_override_verbose():
    from flipad_sklearn.pipeline import make_flipad

    layer, _ = _layer_and_data()
    pipe = make_flipad(layer, "tanh", activation_shape=(8, 4, 4), verbose=1,
                       inverter_params=dict(verbose=0), detector_params=dict(verbose=2))
    assert pipe["inv"].verbose == 0 and pipe["det"].verbose == 2
    assert make_flipad(layer, "tanh", activation_shape=(8, 4, 4))["det"].verbose == 0


def _recipe(name, verbose, det_verbose=None):
    from flipad_sklearn.pipeline import make_dctpad, make_flipad_tabular, make_rawpad

    small = dict(n_epochs=2, hidden_sizes=(8,), rep_dim=4, one_class=None,
                 validation_size=16)
    if det_verbose is not None:
        small["verbose"] = det_verbose
    common = dict(fnr=0.1, random_state=0, device="cpu", detector_params=small)
    if name == "tabular":
        from flipad_sklearn.generators import TabularGenerator

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            G = TabularGenerator(n_features=4, latent_dim=3, hidden_sizes=(16,)).eval()
        X = G.standardize(G.sample(48, random_state=0))
        kw = {} if verbose is None else {"verbose": verbose}
        return make_flipad_tabular(G, n_anchor=100, max_iter=50, **common, **kw), X
    X = np.random.default_rng(0).uniform(-1, 1, size=(48, 1, 4, 4))
    make = make_rawpad if name == "rawpad" else make_dctpad
    kw = {} if verbose is None else {"verbose": verbose}
    return make(**common, **kw), X


@pytest.mark.parametrize("name", ["rawpad", "dctpad", "tabular"])
@pytest.mark.parametrize("verbose", [0, 1])
def test_recipes_verbose(name, verbose, capsys):
    # before: make_rawpad, make_dctpad and make_flipad_tabular took no verbose
    pipe, X = _recipe(name, verbose)
    assert pipe["det"].verbose == verbose
    if name == "tabular":
        assert pipe["inv"].verbose == verbose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # few samples: the fnr's warning
        pipe.fit(X)
    out = capsys.readouterr()
    assert out.out == ""
    if verbose:
        assert "Deep SAD training" in out.err and "2/2" in out.err
        assert ("final-layer inversion" in out.err) == (name == "tabular")
    else:
        assert out.err == ""


@pytest.mark.parametrize("name", ["rawpad", "dctpad", "tabular"])
def test_recipes_verbose_default_and_override(name):
    assert _recipe(name, None)[0]["det"].verbose == 0
    assert _recipe(name, 1, det_verbose=2)[0]["det"].verbose == 2
