"""Sphinx configuration of the normjax documentation (``sphinx-build -W -b html docs
docs/_build/html``): MyST Markdown pages, tutorials executed by myst-nb at build time, and an API
reference generated from the docstrings."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "normjax"
author = "the normjax authors"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_title = "normjax"
html_theme_options = {"show_toc_level": 2}

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_preserve_defaults = True
autosummary_generate = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

nb_execution_mode = "force"  # tutorials run at every build: their outputs are the build's
nb_execution_timeout = 300
nb_execution_raise_on_error = True


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _see_also(app: Any, what: str, name: str, obj: Any, options: Any,
              lines: list[str]) -> None:
    """Link each technique's function and its linen / NNX layers to each other."""
    import normjax
    import normjax.linen
    import normjax.nnx

    layers = {"linen": set(normjax.linen.__all__), "nnx": set(normjax.nnx.__all__)}
    links = []
    if what == "function" and name.count(".") == 1 and name.startswith("normjax."):
        camel = _camel(name.split(".")[1])
        links = [f":class:`normjax.{lib}.{camel}`" for lib in layers if camel in layers[lib]]
    elif what == "class" and name.startswith(("normjax.linen.", "normjax.nnx.")):
        _, lib, cls = name.split(".")
        func = _snake(cls)
        other = "nnx" if lib == "linen" else "linen"
        links = ([f":func:`normjax.{func}`"] if func in normjax.__all__ else []) + (
            [f":class:`normjax.{other}.{cls}`"] if cls in layers[other] else [])
    if links:
        lines += ["", ".. seealso:: " + ", ".join(links), ""]


def _skip_tuple_fields(app: Any, what: str, name: str, obj: Any, skip: bool,
                       options: Any) -> bool | None:
    """NamedTuple fields appear once, from the class's annotations, not again as the
    ``_tuplegetter`` properties ("Alias for field number 0")."""
    if type(obj).__name__ == "_tuplegetter":
        return True
    return None


def _every_public_name_documented(app: Any, env: Any) -> None:
    """Fail the build when a public name of normjax, normjax.linen or normjax.nnx has no entry
    in the API reference (a duplicate entry is already a warning, hence an error with -W)."""
    import importlib

    from sphinx.errors import ExtensionError

    documented = set(env.get_domain("py").objects)
    missing = [f"{module}.{name}" for module in ("normjax", "normjax.linen", "normjax.nnx")
               for name in importlib.import_module(module).__all__
               if f"{module}.{name}" not in documented]
    if missing:
        raise ExtensionError(f"public names missing from the API reference: {missing}")


def _drop_builtin_docstrings(app: Any, what: str, name: str, obj: Any, options: Any,
                             lines: list[str]) -> None:
    """A constant's entry shows its own text, not ``float.__doc__`` or ``tuple.__doc__``."""
    if what in ("data", "attribute") and getattr(obj, "__doc__", None) == type(obj).__doc__:
        lines.clear()


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings)
    app.connect("autodoc-process-docstring", _see_also)
    app.connect("autodoc-skip-member", _skip_tuple_fields)
    app.connect("env-check-consistency", _every_public_name_documented)
