"""Bad or ambiguous inputs get a clear error or warning, never a silent wrong answer.

Each test here failed before the fix it guards (issue 11): the inputs were
accepted and gave wrong numbers, or failed deep inside with a raw traceback.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flipad_sklearn import FinalLayerInverter
from flipad_sklearn._device import resolve_device


# ----------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["mps", "gpu", "xla", "CPU"])
def test_unsupported_device_names_the_supported_ones(device):
    with pytest.raises(ValueError, match="not supported.*'cpu', 'cuda'"):
        resolve_device(device)
    layer = nn.Linear(6, 3)
    x = np.zeros((2, 3))
    # refused at fit, before any work, not at the first transform
    with pytest.raises(ValueError, match="not supported"):
        FinalLayerInverter(layer=layer, device=device).fit(x)


def test_meta_layer_is_refused_at_fit():
    with torch.device("meta"):
        layer = nn.Linear(6, 3)
    with pytest.raises(ValueError, match="meta device.*load_state_dict"):
        FinalLayerInverter(layer=layer, solver="cd").fit(np.zeros((2, 3)))
