"""Griffe extension for the API pages: the docstrings use reStructuredText roles
(``:func:`~flowpost.engine.run```, ``:class:`Flow```) that Markdown would print as they
are; this turns each into inline code with the name as written (``~`` keeps the last
component only, as Sphinx does)."""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _plain(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if tilde else name}`"


class SphinxRoles(griffe.Extension):
    """Rewrite reST roles in every docstring to inline code."""

    def on_object(self, *, obj, **kwargs) -> None:  # noqa: D102 - griffe's hook
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_plain, obj.docstring.value)
