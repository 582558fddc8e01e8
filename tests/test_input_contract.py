"""Issue 27: images as they really travel, labels as scikit-learn users give them.

Each test here failed on the code before issue 27: a wrong verdict that said nothing.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter, FLIPADDetector, LabelConventionWarning
from flipad_sklearn._validation import check_labels

pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ----------------------------------------------------------------- labels
@pytest.mark.parametrize("y", [np.r_[np.ones(5), np.zeros(5)].astype(int),
                               np.r_[np.ones(5), np.zeros(5)].astype(bool),
                               np.r_[np.ones(5), np.zeros(5)].astype(float)])
def test_binary_labels_warn_with_the_convention(y):
    with pytest.warns(LabelConventionWarning, match=r"1 = made by G, -1 = known not made "
                      r"by G, 0 = unlabelled.*np.where\(y == 1, 1, -1\)"):
        labels = check_labels(y, 10)
    np.testing.assert_array_equal(labels, np.r_[np.ones(5), np.zeros(5)])


@pytest.mark.parametrize("y", [np.ones(6, int), np.zeros(6, int), np.ones(6, bool),
                               np.r_[1, 1, -1, -1, 0, 0], np.r_[1, 1, 1, -1, -1, -1]])
def test_flipad_labels_do_not_warn(y):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_labels(y, 6)


def test_detector_and_pipeline_warn_once_on_binary_labels():
    from flipad_sklearn import ConformalPipeline, GeneratorStandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.r_[np.ones(40, int), np.zeros(20, int)]
    det = FLIPADDetector(hidden_sizes=(8,), rep_dim=4, n_epochs=1, fnr=0.1, device="cpu",
                         random_state=0)
    with pytest.warns(LabelConventionWarning):
        det.fit(X, y)
    pipe = ConformalPipeline([("scaler", GeneratorStandardScaler()), ("det", det)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.fit(X, y)
    assert sum(issubclass(w.category, LabelConventionWarning) for w in caught) == 1
