"""A griffe extension for the API reference: Sphinx roles in docstrings as links.

The package's numpydoc docstrings cross-reference with Sphinx roles
(``:class:`~skdknn.nets.MLP```, ``:meth:`transform```), which mkdocstrings would
print as they are. Each role becomes inline code, linked to the object's entry in
the API reference when the target is an object of the package. The link is an
optional autorefs cross-reference: a target without an entry (a private helper, a
scikit-learn class) stays plain code, without a warning.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(
    r":(?:class|func|meth|mod|data|attr|obj|exc):`(?P<short>~?)(?P<target>[\w.]+)`"
)


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the loaded package."""

    def on_package(
        self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any
    ) -> None:
        self._rewrite(pkg, loader, seen=set())

    def _rewrite(
        self, obj: griffe.Object, loader: griffe.GriffeLoader, seen: set[str]
    ) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(
                lambda match: _markup(match, obj, loader), obj.docstring.value
            )
        for member in obj.members.values():
            if not member.is_alias:
                self._rewrite(member, loader, seen)  # type: ignore[arg-type]


def _markup(match: re.Match[str], obj: griffe.Object, loader: Any) -> str:
    target = match["target"]
    text = target.rsplit(".", 1)[-1] if match["short"] else target
    code = f"<code>{html.escape(text)}</code>"
    path = _resolve(target, obj, loader)
    if path is None:
        return code
    return f'<autoref identifier="{path}" optional>{code}</autoref>'


def _resolve(target: str, obj: griffe.Object, loader: Any) -> str | None:
    """The path of the object a role names: absolute, or relative to ``obj``."""
    scopes: list[griffe.Object] = []
    scope: griffe.Object | None = obj
    while scope is not None:
        scopes.append(scope)
        scope = scope.parent
    for candidate in [target, *(f"{s.path}.{target}" for s in scopes)]:
        try:
            found = loader.modules_collection[candidate]
        except (KeyError, ValueError, griffe.AliasResolutionError):
            continue
        return str(found.path)
    return None
