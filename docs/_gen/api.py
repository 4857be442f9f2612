"""The public API as the reference documents it: which modules, which names, for whom.

One list drives the API reference: the build fails when a name in a public module's
``__all__`` is rendered on no reference page (see ``hooks.py``), and docstring
cross-references resolve only to names rendered there (see ``griffe_rst.py``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


@dataclass(frozen=True)
class Tier:
    title: str
    who: str
    modules: tuple[str, ...]


#: The public API in tiers, in the order the reference presents them. A module listed
#: here whose file does not exist (yet) is reported by the build, not skipped.
TIERS: tuple[Tier, ...] = (
    Tier("Application code", "code that sends requests", ("securesession",)),
    Tier(
        "Backend authors",
        "code that stores entries, and the built-in backends",
        (
            "securesession.registry",
            "securesession.memory",
            "securesession.sqlite",
            "securesession.postgres",
            "securesession.vault",
        ),
    ),
    Tier(
        "Test helpers",
        "tests of code that uses securesession, and of new backends",
        (
            "securesession.testing",
            "securesession.testing.contract",
            "securesession.testing.pytest_plugin",
        ),
    ),
    Tier(
        "Integrations",
        "httpx clients, and recorders, caches, tracers and SOAP clients combined with "
        "securesession",
        (
            "securesession.httpx",
            "securesession.integrations",
            "securesession.integrations.betamax",
            "securesession.integrations.otel",
            "securesession.integrations.requests_cache",
            "securesession.integrations.vcr",
            "securesession.integrations.zeep",
        ),
    ),
)

PUBLIC_MODULES: tuple[str, ...] = tuple(m for tier in TIERS for m in tier.modules)


def module_file(module: str) -> Path | None:
    """The source file of *module* (a package's ``__init__.py``), or None if absent."""
    base = SRC.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def exported_names(module: str) -> list[str] | None:
    """The names in *module*'s ``__all__``, read from its source without importing it;
    None if the module does not exist, [] if it has no ``__all__``."""
    path = module_file(module)
    if path is None:
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value
            if isinstance(value, (ast.List, ast.Tuple)):
                return [e.value for e in value.elts if isinstance(e, ast.Constant)]
    return []


def public_names() -> dict[str, list[str] | None]:
    """Every public module and its exported names (None: the module is missing)."""
    return {module: exported_names(module) for module in PUBLIC_MODULES}


def fixtures(module: str) -> list[str]:
    """The public pytest fixtures a plugin module defines (functions decorated with
    ``pytest.fixture`` whose names do not start with ``_``)."""
    path = module_file(module)
    if path is None:
        return []
    found = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(target, ast.Attribute) and target.attr == "fixture":
                    found.append(node.name)
    return found


def documented_names(module: str) -> list[str] | None:
    """What the reference must render for *module*: its ``__all__``, or for a pytest
    plugin, its fixtures."""
    names = exported_names(module)
    if names == [] and module.endswith("pytest_plugin"):
        return fixtures(module)
    return names


def public_paths(pkg: Any) -> dict[str, str]:
    """Canonical path -> public path, for every public name and the public members of
    public classes (a griffe package). The first public module that exports an object
    names it: ``securesession._session.SecureSession`` is ``securesession.SecureSession``.
    """
    return _index(pkg)[0]


def canonical_paths(pkg: Any) -> dict[str, str]:
    """Public path -> canonical path, for every exported name of every public module."""
    return _index(pkg)[1]


def _index(pkg: Any) -> tuple[dict[str, str], dict[str, str]]:
    import griffe

    public: dict[str, str] = {}
    canonical: dict[str, str] = {}
    errors = (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError)
    for module_path in PUBLIC_MODULES:
        try:
            module = pkg.modules_collection[module_path]
        except KeyError:
            continue
        public.setdefault(module.path, module_path)
        for name in documented_names(module_path) or []:
            try:
                member = module.members[name]
                target = member.final_target if member.is_alias else member
            except errors:
                continue
            public_path = f"{module_path}.{name}"
            canonical[public_path] = target.path
            public.setdefault(target.path, public_path)
            if target.is_class:
                for child_name, child in target.members.items():
                    if not child_name.startswith("_") and not child.is_alias:
                        public.setdefault(child.path, f"{public_path}.{child_name}")
                public.setdefault(f"{target.path}.__init__", public_path)
    return public, canonical


def load_package() -> Any:
    """The package as griffe sees it, from the sources (nothing is imported)."""
    import griffe

    return griffe.load("securesession", search_paths=[str(SRC)], resolve_aliases=False)


#: Public modules that are not API reference material, and why.
NOT_IN_REFERENCE: dict[str, str] = {
    "securesession.cli": "the command line: its reference is generated from the parser",
    "securesession.__main__": "python -m securesession",
}


def unlisted_public_modules() -> list[str]:
    """Modules whose dotted path has no ``_`` component but that no tier lists."""
    found = []
    package = SRC / "securesession"
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        if any(part.startswith("_") for part in parts[1:]) and module not in NOT_IN_REFERENCE:
            continue
        if any(module == m or module.startswith(m + ".") for m in NOT_IN_REFERENCE):
            continue
        if module not in PUBLIC_MODULES:
            found.append(module)
    return found
