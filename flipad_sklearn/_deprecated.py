"""Old import paths, kept for one release: each warns once where it is imported."""

import warnings


def moved(old, new):
    """Warn that module ``old`` moved to ``new`` (a FutureWarning, shown to users)."""
    warnings.warn(f"{old} moved to {new}; the old import path will be removed in the "
                  "next release.", FutureWarning, stacklevel=3)
