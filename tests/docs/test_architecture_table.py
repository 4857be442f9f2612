"""docs/architecture.md's module table, and the dependency rules under it, against the code.

Each module's imports of other securesession modules are read from the source (``ast``,
nothing is imported) and compared with the table's "imports (ours)" column; a failure
names the row to fix and gives the cell the code implies. The rules the page states
under the table (no requests below the HTTP layer, registry code sees the TLS model
only, the library never loads ``testing/`` or ``cli/``, no import cycles) are checked on
the same graph.

How the imports column is read: a comma-separated list, or ``nothing``. An item is a
module of ours in backticks, named as in the first column without ``.py`` (a package's
``__init__.py`` by the package's name, ``securesession`` for the top one, a whole-package
row such as ``cli/`` by ``cli``), or the bare name of another library (``ssl``,
``requests``), which must be imported somewhere in the row. An item may be followed by a
note in parentheses: one containing "lazily" says the import happens only when a
function runs (or, in a module with a PEP 562 ``__getattr__``, when a name is first
used); one containing "type" says it is for type checking only; any other note is prose.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

ROOT = Path(__file__).parents[2]
SRC = ROOT / "src"
PACKAGE = "securesession"
DOC = ROOT / "docs" / "architecture.md"
DOC_NAME = "docs/architecture.md"

Kind = Literal["eager", "lazy", "types"]
#: When a row reaches a module in several ways, the strongest way is the one documented.
STRENGTH: dict[Kind, int] = {"types": 0, "lazy": 1, "eager": 2}
NOTE_FOR: dict[Kind, str] = {"eager": "", "lazy": " (lazily)", "types": " (types only)"}


# -- the code ------------------------------------------------------------------------------


def _module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


@dataclass(frozen=True)
class Import:
    """One import statement's target, as the module at *source* line *line* makes it."""

    source: str
    target: str  # a module of ours (dotted), or another library's dotted name
    kind: Kind
    line: int
    via: str | None = None  # the PEP 562 facade the name was imported from, if any

    @property
    def ours(self) -> bool:
        return self.target == PACKAGE or self.target.startswith(PACKAGE + ".")

    def where(self) -> str:
        return f"{MODULES[self.source].relative_to(ROOT)}:{self.line}"


def _package_of(module: str) -> str:
    """The package relative imports in *module* are resolved against."""
    is_package = MODULES[module].name == "__init__.py"
    return module if is_package else module.rpartition(".")[0]


def _resolve_from(
    module: str, node: ast.ImportFrom, facades: dict[str, dict[str, str]]
) -> Iterator[tuple[str, str | None]]:
    """The modules ``from X import a, b`` in *module* loads, and the facade each name
    came through: ``X.a`` where that is a module (a submodule import); where ``X`` is a
    PEP 562 facade, the module it loads ``a`` from; else ``X`` itself."""
    if node.level:
        base = _package_of(module).split(".")
        base = base[: len(base) - (node.level - 1)]
        dotted = ".".join(base + ([node.module] if node.module else []))
    else:
        dotted = node.module or ""
    for alias in node.names:
        candidate = f"{dotted}.{alias.name}"
        if candidate in MODULES:
            yield candidate, None
        elif alias.name in facades.get(dotted, {}):
            yield facades[dotted][alias.name], dotted
        else:
            yield dotted, None


def _import_module_target(module: str, call: ast.Call) -> str | None:
    """``importlib.import_module("name", package)`` with a constant name: its module."""
    func = call.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )
    if not named or not call.args:
        return None
    name = call.args[0]
    if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
        return None
    if not name.value.startswith("."):
        return name.value
    anchor = call.args[1] if len(call.args) > 1 else None
    package = module if isinstance(anchor, ast.Name) and anchor.id == "__name__" else None
    return importlib.util.resolve_name(name.value, package or _package_of(module))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _facade_names(module: str) -> dict[str, str]:
    """For a PEP 562 facade (a module-level ``__getattr__``), the module each name its
    ``TYPE_CHECKING`` block imports is loaded from; for any other module, nothing."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    if not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
        return {}
    names = {}
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom):
                    targets = _resolve_from(module, statement, {})
                    for alias, (target, _) in zip(statement.names, targets, strict=True):
                        names[alias.asname or alias.name] = target
    return names


FACADES = {module: names for module in MODULES if (names := _facade_names(module))}


def imports_of(module: str) -> list[Import]:
    """Every import *module* makes, and when: at import time, when a function runs, or
    for type checking only. In a PEP 562 facade (a module-level ``__getattr__``), the
    ``TYPE_CHECKING`` imports declare what ``__getattr__`` loads on first use: lazily."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    facade = module in FACADES
    found: list[Import] = []

    def visit(node: ast.AST, kind: Kind) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            kind = "lazy" if kind == "eager" else kind
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            inner: Kind = "lazy" if facade else "types"
            for child in node.body:
                visit(child, inner)
            for child in node.orelse:
                visit(child, kind)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, kind, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            resolved = _resolve_from(module, node, FACADES)
            found.extend(Import(module, t, kind, node.lineno, via) for t, via in resolved)
        elif isinstance(node, ast.Call):
            target = _import_module_target(module, node)
            if target is not None:
                found.append(Import(module, target, kind, node.lineno))
        for sub in ast.iter_child_nodes(node):
            visit(sub, kind)

    for statement in tree.body:
        visit(statement, "eager")
    return found


IMPORTS = {module: imports_of(module) for module in MODULES}


# -- the table -----------------------------------------------------------------------------


@dataclass
class Row:
    """One row of the module table."""

    line: int  # in docs/architecture.md
    name: str  # the first cell, as written (without backticks)
    imports_cell: str
    modules: list[str] = field(default_factory=list)  # dotted names
    package: str | None = None  # for a whole-package row ("cli/"): the package

    def label(self) -> str:
        return f"{DOC_NAME} line {self.line}, row `{self.name}`"


def _expand(name: str) -> list[str]:
    """``_registry/{memory,sqlite}.py`` -> ``_registry/memory.py``, ``_registry/sqlite.py``."""
    match = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", name)
    if match is None:
        return [name]
    head, options, tail = match.groups()
    return [head + option.strip() + tail for option in options.split(",")]


def _table_rows() -> list[Row]:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index("## Modules")
    rows = []
    for number, text in enumerate(lines[start + 1 :], start + 2):
        if text.startswith("## "):
            break
        if not text.startswith("|") or re.fullmatch(r"\|[-| :]*\|", text):
            continue
        cells = [cell.strip() for cell in text.strip().strip("|").split("|")]
        if cells[0] == "module":  # the header
            continue
        assert len(cells) == 3, f"{DOC_NAME} line {number}: a row has three cells: {text!r}"
        rows.append(Row(number, cells[0].strip("`"), cells[2]))
    return rows


def _attach_modules(rows: list[Row]) -> tuple[list[str], list[str]]:
    """Fill each row's modules; return the rows' problems (a name that is no module) and
    the modules no row covers."""
    problems = []
    claimed: dict[str, Row] = {}
    for row in rows:
        for name in _expand(row.name):
            if name.endswith("/"):
                package = ".".join([PACKAGE, *name.strip("/").split("/")])
                members = [m for m in MODULES if m == package or m.startswith(package + ".")]
                row.package = package
            else:
                parts = name.removesuffix(".py").split("/")
                if parts[-1] == "__init__":
                    parts.pop()
                dotted = ".".join([PACKAGE, *parts])
                members = [dotted] if dotted in MODULES else []
            if not members:
                problems.append(f"{row.label()}: `{name}` names no module under src/{PACKAGE}")
            row.modules.extend(members)
    # A module's own row wins over a whole-package row (``_tls/model.py`` over ``_tls/``).
    for row in sorted(rows, key=lambda r: r.package is None):
        for module in row.modules:
            claimed[module] = row
    for row in rows:
        row.modules = [m for m in row.modules if claimed[m] is row]
    return problems, [module for module in MODULES if module not in claimed]


def _row_of(module: str) -> Row | None:
    return next((row for row in ROWS if module in row.modules), None)


def reference(module: str) -> str:
    """How the imports column names *module*: its row's package, or its own path."""
    row = _row_of(module)
    if row is not None and row.package is not None:
        module = row.package
    if module == PACKAGE:
        return PACKAGE
    return module.removeprefix(PACKAGE + ".").replace(".", "/")


def derived(modules: Iterable[str], package: str | None) -> dict[str, tuple[Kind, Import]]:
    """What the modules of one row import of ours, outside the row: the reference of each
    module reached, the strongest way it is reached, and the first import doing so."""
    modules = list(modules)
    found: dict[str, tuple[Kind, Import]] = {}
    for module in modules:
        for imp in IMPORTS[module]:
            if not imp.ours or imp.target in modules:
                continue
            if package is not None and (imp.target + ".").startswith(package + "."):
                continue
            # Names from the top package are the public API, documented as such.
            ref = reference(PACKAGE if imp.via == PACKAGE else imp.target)
            if ref in found and STRENGTH[found[ref][0]] >= STRENGTH[imp.kind]:
                continue
            found[ref] = (imp.kind, imp)
    return found


def _externals(modules: Iterable[str]) -> set[str]:
    """Every other library the modules import, by each prefix of its dotted name."""
    names: set[str] = set()
    for module in modules:
        for imp in IMPORTS[module]:
            if not imp.ours:
                parts = imp.target.split(".")
                names.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return names


@dataclass
class Cell:
    """An imports cell, read: our modules with their kind and note, other libraries."""

    ours: dict[str, tuple[Kind, str]]  # reference -> (kind, the note as written)
    others: dict[str, str]  # library -> the note as written


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses and backticks."""
    items, depth, tick, current = [], 0, False, ""
    for char in text:
        if char == "`":
            tick = not tick
        elif not tick and char == "(":
            depth += 1
        elif not tick and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not tick:
            items.append(current.strip())
            current = ""
        else:
            current += char
    items.append(current.strip())
    return [item for item in items if item]


def parse_cell(text: str) -> Cell:
    """Read an imports cell; ValueError says what does not follow the format."""
    cell = Cell({}, {})
    if text == "nothing":
        return cell
    for item in _split_top_level(text):
        match = re.fullmatch(r"(`[^`]+`|[A-Za-z_][\w.]*)\s*(\(.*\))?", item)
        if match is None:
            raise ValueError(
                f"{item!r} is neither `module` nor a library name, each optionally "
                "followed by a note in parentheses"
            )
        name, note = match.group(1), match.group(2) or ""
        if name.startswith("`"):
            kind: Kind = "lazy" if "lazily" in note else "types" if "type" in note else "eager"
            cell.ours[name.strip("`")] = (kind, note)
        else:
            cell.others[name] = note
    return cell


def _suggested_cell(
    modules: list[str], package: str | None, keep: dict[str, tuple[Kind, str]]
) -> str:
    """The imports cell the code implies, keeping each note still true."""
    found = derived(modules, package)
    if not found:
        return "nothing"
    items = []
    for ref in sorted(found, key=lambda r: (-STRENGTH[found[r][0]], r.lstrip("_"))):
        kind = found[ref][0]
        documented = keep.get(ref)
        note = f" {documented[1]}" if documented and documented[0] == kind and documented[1] else ""
        items.append(f"`{ref}`{note or NOTE_FOR[kind]}")
    return ", ".join(items)


ROWS = _table_rows()
ROW_PROBLEMS, UNLISTED = _attach_modules(ROWS)


# -- the tests -----------------------------------------------------------------------------


def test_every_module_has_a_row() -> None:
    problems = list(ROW_PROBLEMS)
    for module in UNLISTED:
        path = MODULES[module]
        name = str(path.relative_to(SRC / PACKAGE))
        problems.append(
            f"{path.relative_to(ROOT)} has no row in {DOC_NAME}'s module table; add one:\n"
            f"    | `{name}` | <what it owns> | {_suggested_cell([module], None, {})} |"
        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_the_imports_column_matches_the_code(row: Row) -> None:
    try:
        cell = parse_cell(row.imports_cell)
    except ValueError as exc:
        pytest.fail(f"{row.label()}: the imports column is not in the format: {exc}")
    found = derived(row.modules, row.package)
    problems = []
    for ref, (kind, imp) in sorted(found.items()):
        if ref not in cell.ours:
            problems.append(f"`{ref}` is imported{NOTE_FOR[kind]} ({imp.where()}) but not listed")
        elif cell.ours[ref][0] != kind:
            problems.append(
                f"`{ref}` is listed as {cell.ours[ref][0]} but imported {kind} ({imp.where()})"
            )
    problems += [f"`{ref}` is listed but not imported" for ref in cell.ours if ref not in found]
    externals = _externals(row.modules)
    problems += [
        f"{name} is listed but not imported" for name in cell.others if name not in externals
    ]
    if problems:
        suggestion = _suggested_cell(row.modules, row.package, cell.ours)
        libraries = [
            f"{name} {note}".strip() for name, note in cell.others.items() if name in externals
        ]
        if libraries:
            suggestion = ", ".join(([suggestion] if suggestion != "nothing" else []) + libraries)
        pytest.fail(
            f"{row.label()} does not match the code:\n  "
            + "\n  ".join(problems)
            + f"\nWrite its imports column as:\n    {suggestion}"
        )


# -- the rules under the table ---------------------------------------------------------------


def _eager_closure(start: str) -> dict[str, list[Import]]:
    """Every module of ours that importing *start* loads, with the chain of imports that
    loads it (lazy and type-only imports load nothing at import time)."""
    chains: dict[str, list[Import]] = {start: []}
    pending = [start]
    while pending:
        module = pending.pop()
        for imp in IMPORTS[module]:
            if imp.ours and imp.kind == "eager" and imp.target not in chains:
                chains[imp.target] = [*chains[module], imp]
                pending.append(imp.target)
    return chains


def _chain_text(chain: list[Import]) -> str:
    return " -> ".join(f"{imp.target} ({imp.where()})" for imp in chain)


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


BACKENDS = f"{PACKAGE}._registry"
TLS = f"{PACKAGE}._tls"


def test_backends_cache_crypto_and_tls_never_import_requests() -> None:
    """ "Backends, the cache, crypto and `_tls/` never import requests": not themselves, in
    any function, nor through what they load."""
    subjects = [
        m for m in MODULES if _in(m, BACKENDS, TLS, f"{PACKAGE}._cache", f"{PACKAGE}._crypto")
    ]
    problems = []
    for subject in subjects:
        for imp in IMPORTS[subject]:
            if _in(imp.target, "requests"):
                problems.append(f"{subject} imports {imp.target} ({imp.where()})")
        for module, chain in _eager_closure(subject).items():
            for imp in IMPORTS[module]:
                if module != subject and imp.kind == "eager" and _in(imp.target, "requests"):
                    problems.append(f"{subject} loads requests: {_chain_text([*chain, imp])}")
    assert not problems, f"{DOC_NAME}'s rule broken:\n" + "\n".join(problems)


def test_registry_and_entry_code_load_the_tls_model_only() -> None:
    """ "Entry code and the registry import the TLS model only (`_tls/model`): importing
    them loads no ssl, urllib3 or cryptography.x509", the Vault backend excepted (its own
    connection to Vault is HTTPS, with TLS failures explained)."""
    vault_backend = f"{BACKENDS}.vault"
    subjects = [m for m in MODULES if _in(m, BACKENDS, f"{PACKAGE}._entry") and m != vault_backend]
    allowed_tls = {TLS, f"{TLS}.model"}
    problems = []
    for subject in subjects:
        for module, chain in _eager_closure(subject).items():
            if _in(module, TLS) and module not in allowed_tls:
                problems.append(f"{subject} loads {module}: {_chain_text(chain)}")
            for imp in IMPORTS[module]:
                if imp.kind == "eager" and _in(imp.target, "ssl", "urllib3", "cryptography.x509"):
                    problems.append(f"{subject} loads {imp.target}: {_chain_text([*chain, imp])}")
    assert not problems, f"{DOC_NAME}'s rule broken:\n" + "\n".join(sorted(set(problems)))


def test_the_library_never_imports_testing_or_cli() -> None:
    """ "The library never imports `testing/` or `cli/`", but for ``securesession.registry``
    handing out the contract suite when a test asks for it (lazily)."""
    front_ends = (f"{PACKAGE}.testing", f"{PACKAGE}.cli", f"{PACKAGE}.__main__")
    problems = []
    for module in MODULES:
        if _in(module, *front_ends):
            continue
        for imp in IMPORTS[module]:
            if not _in(imp.target, *front_ends[:2]) or imp.kind == "types":
                continue
            contract = (module, imp.target) == (
                f"{PACKAGE}.registry",
                f"{PACKAGE}.testing.contract",
            )
            if not (contract and imp.kind == "lazy"):
                problems.append(f"{module} imports {imp.target} ({imp.where()})")
    assert not problems, f"{DOC_NAME}'s rule broken:\n" + "\n".join(problems)


def test_no_import_cycles() -> None:
    """No circle among the imports that run when a module is imported (an import inside a
    function, such as ``MasterKey.from_vault_transit``'s, is the way out of one)."""
    graph = {
        module: sorted({imp.target for imp in IMPORTS[module] if imp.ours and imp.kind == "eager"})
        for module in MODULES
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in graph.get(module, []):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
