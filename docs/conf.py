"""Sphinx configuration for sklearn-atomsets.

Sphinx + autodoc + numpydoc, as scikit-learn, matminer and pymatgen do: the scientific-Python
ecosystem reads numpydoc docstrings, and the API pages are generated from them.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))
sys.path.insert(0, str(DOCS))

import sklearn_atomsets  # noqa: E402

project = "sklearn-atomsets"
author = "sklearn-atomsets developers"
release = version = sklearn_atomsets.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "numpydoc",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
# scikit-learn's own mixin methods (score, set_*_request) are documented by scikit-learn
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
exclude_patterns = ["_build", "_generated"]
templates_path = ["_templates"]
html_theme = "pydata_sphinx_theme"
html_title = "sklearn-atomsets"
nitpicky = False
# The docs are built offline: no intersphinx inventories are fetched.
intersphinx_mapping = {}


def _generate(app):
    """Figures and tables are made from the code and the benchmark results at build time."""
    import make_figures

    make_figures.main(DOCS / "_generated")


def setup(app):
    os.environ.setdefault("MPLBACKEND", "Agg")
    app.connect("builder-inited", _generate)
