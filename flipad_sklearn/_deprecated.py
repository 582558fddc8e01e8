"""Old import paths, kept for one release: each warns (FutureWarning) when imported.

A moved module's old name is an alias of the new module (the same module
object, so pickles, ``isinstance`` and monkeypatching see one class); a
module whose names went to several places forwards each name on access.
The forwards import with :func:`importlib.import_module` when an old name is
used, so they add no import edge to the package's map (``tests/test_import_rules.py``).
"""

import importlib
import sys
import warnings


def moved(old, new, stacklevel=3):
    """Warn that module ``old`` moved to ``new`` (a FutureWarning, shown to users).

    ``stacklevel`` counts from here to the user's import (import machinery
    frames are skipped by :mod:`warnings`).
    """
    warnings.warn(f"{old} moved to {new}; the old import path will be removed in the "
                  "next release.", FutureWarning, stacklevel=stacklevel)


def moved_name(old, new):
    """Warn that the name ``old`` is now ``new`` (at the user's line)."""
    warnings.warn(f"{old} moved to {new}; the old name will be removed in the next release.",
                  FutureWarning, stacklevel=3)


def alias(old, new, submodules=()):
    """Make module ``old`` (and ``old.<sub>``) the module ``new`` (and ``new.<sub>``)."""
    moved(old, new, stacklevel=4)
    module = importlib.import_module(new)
    sys.modules[old] = module
    for sub in submodules:
        sys.modules[f"{old}.{sub}"] = importlib.import_module(f"{new}.{sub}")
    return module


def forward(old, homes):
    """A module ``__getattr__`` that finds each name of ``old`` in its new home.

    ``homes``: ``{name: new module}``.
    """
    def __getattr__(name):
        if name not in homes:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__
