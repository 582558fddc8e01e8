from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "flipad_sklearn" / "_version.py").read_text(), version)

setup(
    name="flipad_sklearn",
    version=version["__version__"],
    description=(
        "Single-model attribution of generative models (FLIPAD): final-layer "
        "inversion and deep one-class detection, scikit-learn compatible."
    ),
    long_description=(here / "README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    packages=find_packages(include=["flipad_sklearn", "flipad_sklearn.*"]),
    package_data={"flipad_sklearn": ["datasets/data/*", "generators/checkpoints/*.pt"]},
    python_requires=">=3.10",
    # torch: CPU users install the CPU build first (see README.rst); a bare
    # requirement with no torch present would pull a multi-GB CUDA build.
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.6",
        "torch>=2.1",
        "joblib>=1.3",
        "cvxpy>=1.4",
        "tqdm>=4.60",
        "Pillow>=9.1",
    ],
    extras_require={
        "test": ["pytest>=7", "dask[distributed]>=2024.1", "matplotlib>=3.6"],
        "dask": ["dask[distributed]>=2024.1"],
        "plot": ["matplotlib>=3.6"],
        # skops: persistence.save(format="skops"), an alternative to the own format
        "skops": ["skops>=0.10"],
        # Stable Diffusion and other diffusers models (docs/user_guide/diffusers.rst)
        "diffusers": ["diffusers>=0.25"],
        # TVAE / CTGAN / CopulaGAN as "others" of the tabular benchmark (SDVSynthesizer)
        "sdv": ["sdv>=1.10"],
        "docs": [
            "sphinx>=7",
            "numpydoc>=1.6",
            "sphinx-gallery>=0.15",
            "pydata-sphinx-theme>=0.15",
            "matplotlib>=3.6",
        ],
    },
    entry_points={"console_scripts": ["flipad = flipad_sklearn.cli:main"]},
)
