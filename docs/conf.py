"""Sphinx configuration for trio_chat."""

from __future__ import annotations

import trio_chat

project = "trio_chat"
author = "trio_chat developers"
release = trio_chat.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
nitpicky = True
# CI has no network, so no intersphinx: references to the standard library, trio and attrs stay
# unresolved on purpose. References to trio_chat's own names are still checked.
nitpick_ignore_regex = [(r"py:.*", r"(?!trio_chat\b).*")]
# Private typing helpers, explained in words where they appear: the "not given" sentinel of
# serve_tcp's per-handler overrides (shown as KEEP), and the type variables of serve_listeners
# (the listeners' type) and connect_tcp (the handler's type).
nitpick_ignore = [
    ("py:class", "trio_chat._serve._Keep"),
    ("py:class", "trio_chat._serve.ListenerT"),
    ("py:class", "trio_chat._client.HandlerT"),
]
