"""A small zoo of generators to attribute: image GANs and a tabular GAN.

Image: DCGAN, WGAN-GP, LSGAN and EBGAN on 28x28 or 32x32 images in [-1, 1],
all with the same small generator family (:class:`ImageGenerator`, ending in
``nn.ConvTranspose2d`` + ``nn.Tanh``) and different discriminators and losses
(:func:`train_gan`).  Tabular: a KL-WGAN-style MLP (noise 10 -> 300 -> 300 ->
11, final ``nn.Linear``, no output activation; :func:`train_tabular_gan`), and
two tabular generators of other families to attribute against
(:class:`GaussianMixtureGenerator`, :class:`GaussianCopulaGenerator`) and,
with the optional ``sdv`` extra, the deep synthesisers TVAE, CTGAN and
CopulaGAN (:class:`SDVSynthesizer`).
:class:`StyleGANGenerator` (:func:`train_stylegan`) is a small StyleGAN2-like
generator whose image adds an upsampled skip to a modulated toRGB output
(inverted by :class:`~flipad_sklearn.SkipInverter`).

Every generator offers ``sample(n, random_state)``, ``final_layer``,
``latent_shape`` and ``sample_activations(n, random_state)``, and is saved and
loaded with :func:`save_generator` / :func:`load_generator`.
:func:`load_demo_generator` returns the demo's four small trained MNIST
generators, which ship with the package.

:func:`train_shadows` retrains a generator's recipe with other seeds: the
shadow generators that, as labelled negatives, make the detector work
against generators it never saw (the recommended open-world recipe).
:class:`UpsampleConvGenerator` and :class:`PixelShuffleGenerator` are image
generators of two other upsampling families, sized to any output: trained
on ``G``'s samples with :func:`train_shadows`, they are labelled others whose
spectral traces differ from ``G``'s; :func:`final_layer_variant` copies
``G`` with another kind of last upsampling only (in its final layer, or in
the layer before a final layer at full resolution);
:func:`open_world_shadows` trains the open-world recipe's five shadows.
"""

from ._architectures import (
    OPEN_WORLD_SHADOWS, PixelShuffleGenerator, UpsampleConvGenerator, final_layer_variant,
    open_world_shadows,
)
from ._common import load_generator, save_generator
from ._demo_checkpoints import load_demo_generator
from ._image import GAN_KINDS, IMAGE_SIZES, ImageGenerator, train_gan
from ._shadows import default_shadow_seeds, train_shadows
from ._stylegan import StyleGANGenerator, train_stylegan
from ._tabular import TabularGenerator, train_tabular_gan
from ._sdv_others import SDV_KINDS, SDVSynthesizer
from ._tabular_others import GaussianCopulaGenerator, GaussianMixtureGenerator

__all__ = [
    "GAN_KINDS", "GaussianCopulaGenerator", "GaussianMixtureGenerator", "IMAGE_SIZES",
    "ImageGenerator", "OPEN_WORLD_SHADOWS", "PixelShuffleGenerator", "SDV_KINDS",
    "SDVSynthesizer", "StyleGANGenerator", "TabularGenerator", "UpsampleConvGenerator",
    "default_shadow_seeds", "final_layer_variant", "load_demo_generator", "load_generator",
    "open_world_shadows", "save_generator", "train_gan", "train_shadows", "train_stylegan",
    "train_tabular_gan",
]
