"""Build shim: all metadata lives in pyproject.toml ([project]).

Kept so that tools which still call ``setup.py`` directly work; ``pip install``
and ``python -m build`` read pyproject.toml alone.
"""
from setuptools import setup

setup()
