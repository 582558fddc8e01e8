"""Real data that works offline, and loaders for a user's own data.

The MNIST subset and the red Wine Quality table are vendored in
``flipad_sklearn/datasets/data`` with their attribution and licences
(``data/README.md``); nothing is downloaded at run time.
"""

from ._base import load_mnist_subset, load_wine_quality
from ._image_folder import IMAGE_EXTENSIONS, load_image_folder

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder", "load_mnist_subset", "load_wine_quality"]
