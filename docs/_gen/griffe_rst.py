"""A griffe extension: the library's reStructuredText-flavoured docstrings as Markdown.

The docstrings are written for ``help()`` and Sphinx habits: ``:class:`X``` roles,
``text::`` literal blocks, definition lists. mkdocstrings renders Markdown, so each
docstring is rewritten once, when griffe has loaded the package:

* a role naming an object the API reference renders becomes a cross-reference to it
  (under its public name: ``securesession.SecureSession``, not
  ``securesession._session.SecureSession``); any other role (a private helper, an
  attribute of a private class) becomes inline code. A role whose target cannot be
  resolved at all is reported, which fails a strict build;
* ``text::`` and its indented block become ``text:`` and a fenced block (Python when
  it parses as Python);
* an RST definition list (a term, its definition indented below it) becomes a
  Markdown one (the ``def_list`` extension).
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import griffe

sys.path.insert(0, str(Path(__file__).parent))
import api

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|attr|mod|exc|data|obj|const):"
    r"`(?P<body>[^`]+)`"
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_LIST_ITEM = re.compile(r"^\s*(?:[*+-]|\d+[.)])\s")


def _scopes(obj: griffe.Object) -> list[griffe.Object]:
    """Where a name in *obj*'s docstring is looked up, innermost first: *obj*, the
    classes and functions around it, and its module (as Python scopes go: a module's
    names, never its parent package's)."""
    scopes = []
    current: griffe.Object | None = obj
    while current is not None:
        scopes.append(current)
        if current.is_module:
            break
        current = current.parent
    return scopes


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package, and records the cross-reference map."""

    def __init__(self) -> None:
        super().__init__()
        self._public: dict[str, str] = {}  # canonical path -> public path
        self._problems: list[str] = []

    # -- griffe hooks -------------------------------------------------------------

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != "securesession":
            return
        self._public = api.public_paths(pkg)
        for obj in self._walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = self.convert(obj.docstring.value, obj)
        for problem in self._problems:
            griffe.logger.warning(problem)

    def _walk(self, obj: griffe.Object) -> list[griffe.Object]:
        found = [obj]
        for member in obj.members.values():
            if member.is_alias:
                continue
            found.extend(self._walk(member))
        return found

    # -- the rewriting ----------------------------------------------------------------

    def convert(self, text: str, obj: griffe.Object | None = None) -> str:
        lines = text.splitlines()
        out: list[str] = []
        i = 0
        in_fence = False
        while i < len(lines):
            line = lines[i]
            if _FENCE.match(line):
                in_fence = not in_fence
                out.append(line)
                i += 1
                continue
            if in_fence:
                out.append(line)
                i += 1
                continue
            stripped = line.rstrip()
            if stripped.endswith("::"):
                block_end, block = self._literal_block(lines, i)
                if block:
                    lead = stripped[:-3] if stripped.endswith(" ::") else stripped[:-1]
                    if lead.strip() == ":":
                        lead = ""
                    pad = " " * _indent(line)
                    if lead.strip():
                        out.append(self._roles(lead, obj))
                        out.append("")
                    lang = "python" if self._is_python(block) else "text"
                    out.append(f"{pad}```{lang}")
                    out.extend(pad + b if b else "" for b in block)
                    out.append(f"{pad}```")
                    out.append("")
                    i = block_end
                    continue
            if self._is_term(lines, i):
                out.append(self._roles(line, obj))
                j = i + 1
                definition: list[str] = []
                while j < len(lines) and (
                    not lines[j].strip() or _indent(lines[j]) > _indent(line)
                ):
                    definition.append(lines[j])
                    j += 1
                while definition and not definition[-1].strip():
                    definition.pop()
                body = textwrap.dedent("\n".join(definition)).splitlines()
                for k, def_line in enumerate(body):
                    prefix = ":   " if k == 0 else "    "
                    out.append(
                        " " * _indent(line) + prefix + self._roles(def_line, obj)
                        if def_line
                        else ""
                    )
                out.append("")
                i = j
                continue
            out.append(self._roles(line, obj))
            i += 1
        return "\n".join(out).rstrip() + "\n"

    @staticmethod
    def _literal_block(lines: list[str], start: int) -> tuple[int, list[str]]:
        base = _indent(lines[start])
        j = start + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > base):
            k += 1
        block = lines[j:k]
        while block and not block[-1].strip():
            block.pop()
        return k, textwrap.dedent("\n".join(block)).splitlines()

    @staticmethod
    def _is_python(block: list[str]) -> bool:
        try:
            ast.parse("\n".join(block))
        except SyntaxError:
            return False
        return True

    @staticmethod
    def _is_term(lines: list[str], i: int) -> bool:
        line = lines[i]
        if not line.strip() or _LIST_ITEM.match(line) or line.rstrip().endswith("::"):
            return False
        previous = lines[i - 1] if i > 0 else ""
        if previous.strip() and _indent(previous) <= _indent(line):
            return False  # a term starts a paragraph, or follows a definition
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        return bool(nxt.strip()) and _indent(nxt) > _indent(line)

    def _roles(self, line: str, obj: griffe.Object | None) -> str:
        return _ROLE.sub(lambda m: self._role(m, obj), line)

    def _role(self, match: re.Match[str], obj: griffe.Object | None) -> str:
        body = match["body"].strip()
        explicit = re.fullmatch(r"(?P<text>.+?)\s*<(?P<target>[^>]+)>", body)
        if explicit:
            text, target = explicit["text"], explicit["target"]
        else:
            target = body.lstrip("~")
            text = target.rsplit(".", 1)[-1] if body.startswith("~") else target
        if match["role"] in ("func", "meth") and not text.endswith(")"):
            text += "()"
        target = target.removesuffix("()")
        resolved = self._resolve(target, obj) if obj is not None else None
        public = self._public.get(resolved) if resolved else None
        if public is not None:
            return f"[`{text}`][{public}]"
        unresolved = resolved is None and obj is not None and self._rendered(obj)
        if unresolved and obj is not None and not self._external(target, obj):
            where = obj.path if obj is not None else "?"
            self._problems.append(
                f"griffe_rst: {where}: {match.group(0)} names no object "
                "(the API reference renders this docstring)"
            )
        return f"`{text}`"

    def _rendered(self, obj: griffe.Object) -> bool:
        return obj.path in self._public

    @staticmethod
    def _external(target: str, obj: griffe.Object) -> bool:
        """Whether *target* names something outside securesession (the standard
        library, requests, zeep...), decided from the sources alone: whether those
        packages are installed must not change the build."""
        if target.startswith("."):
            return True  # relative: a private module's own names
        first = target.split(".", 1)[0]
        if first == "securesession":
            return False
        if hasattr(builtins, first) or first in sys.stdlib_module_names:
            return True
        for scope in [*_scopes(obj), obj.modules_collection["securesession"]]:
            members = scope.all_members if scope.is_class else scope.members
            if first in members:
                found = members[first]
                path = str(found.target_path if found.is_alias else found.path)
                return path.split(".", 1)[0] != "securesession"
        return "." in target  # an unimported dotted name: a module path elsewhere

    def _resolve(self, target: str, obj: griffe.Object) -> str | None:
        """The canonical path of *target* as named from *obj*'s scope, or None."""
        parts = target.split(".")
        if parts[0] == "securesession":
            try:
                root = obj.modules_collection["securesession"]
            except KeyError:
                return None
            return self._descend(root, parts[1:])
        for scope in _scopes(obj):
            found = self._descend(scope, parts)
            if found is not None:
                return found
        # Then a name the package itself exports: the docstrings say `Registry` or
        # `NoCredentialsError` where their module never imports it.
        try:
            root = obj.modules_collection["securesession"]
        except KeyError:
            return None
        return self._descend(root, parts) if parts[0] in root.members else None

    @staticmethod
    def _descend(start: griffe.Object | None, parts: list[str]) -> str | None:
        current: Any = start
        try:
            for part in parts:
                if current.is_alias:
                    current = current.final_target
                members = current.all_members if current.is_class else current.members
                current = members[part]
            if current.is_alias:
                try:
                    current = current.final_target
                except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                    return str(current.target_path)
        except (KeyError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        return str(current.path)
