"""MkDocs hook: a public object without a docstring is a warning (so ``mkdocs build
--strict`` fails on it, as it does on a broken link).

mkdocstrings renders what the API pages name with ``::: module.path``; this hook walks
the same objects with griffe (statically, as mkdocstrings does) and warns for every public
module, class, function or method that has no docstring. A method that overrides a
documented method of a base class inherits that documentation (as ``inspect.getdoc``
does), and so do dataclass-style members that are attributes, which are not checked.
"""

from __future__ import annotations

import logging
import pathlib
import re

log = logging.getLogger("mkdocs.hooks.docstrings")

_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)", re.MULTILINE)


def _documented_in_base(cls, name: str) -> bool:
    try:
        bases = cls.resolved_bases
    except Exception:  # a base outside the package (equinox.Module, NamedTuple, ...)
        return False
    for base in bases:
        member = base.members.get(name)
        if member is not None and not member.is_alias and member.docstring:
            return True
        if _documented_in_base(base, name):
            return True
    return False


def _missing(obj, seen: set[str]) -> list[str]:
    out = []
    for name, member in obj.members.items():
        if name.startswith("_") or member.is_alias or member.path in seen:
            continue
        seen.add(member.path)
        if member.is_attribute:
            continue
        if not member.docstring and not (obj.is_class and _documented_in_base(obj, name)):
            out.append(f"{member.path} ({member.relative_filepath}:{member.lineno})")
        if member.is_class or member.is_module:
            out += _missing(member, seen)
    return out


def on_pre_build(config, **kwargs) -> None:
    import griffe

    docs = pathlib.Path(config["docs_dir"])
    paths = sorted({m for page in docs.rglob("*.md") for m in _DIRECTIVE.findall(page.read_text())})
    if not paths:
        return
    pkg = griffe.load("flowpost", search_paths=["src"], resolve_aliases=True, resolve_external=False)
    seen: set[str] = set()
    missing: list[str] = []
    for path in paths:
        obj = pkg if path == "flowpost" else pkg[path.removeprefix("flowpost.")]
        if obj.is_alias:
            obj = obj.final_target
        if not obj.docstring and obj.path not in seen:
            missing.append(f"{obj.path} ({obj.relative_filepath}:{obj.lineno})")
        seen.add(obj.path)
        if obj.is_module or obj.is_class:
            missing += _missing(obj, seen)
    for m in missing:
        log.warning(f"missing docstring: {m}")
