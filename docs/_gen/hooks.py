"""MkDocs hooks: the generated parts of the site, and the checks that keep it honest.

* ``<!-- generated: NAME -->`` in a page is replaced by generated Markdown:
  ``cli`` (every command and option, from the argparse parser), ``errors`` (the
  troubleshooting table, from the error tree in ``_exceptions.py``), ``api-tiers``
  (the public modules and names, grouped by who uses them).
* A link from a page to a repository file outside ``docs/`` (``../examples/x.py``,
  ``../benchmarks/README.md``) works when the Markdown is read on a forge; on the site
  it becomes the file's path in code, and a link to a file that does not exist is a
  warning (so ``mkdocs build --strict`` fails).
* Every name a public module exports is rendered: by a ``::: name`` block on a page of
  its tier (or its module's block), or else, until someone places it, on the
  reference's index (``<!-- generated: unsorted -->``), so a new public name never
  goes undocumented and never breaks the build. A module of a tier that no page
  renders, or a ``:::`` block naming a missing object, fails the strict build.
"""

from __future__ import annotations

import logging
import posixpath
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import api
import cli_reference
import troubleshooting

log = logging.getLogger("mkdocs.hooks.securesession")

_MARKER = re.compile(r"^<!-- generated: (?P<name>[a-z-]+) -->$", re.MULTILINE)
# [text](target) outside code; the target has no scheme and no leading "#".
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s#][^)\s]*)\)")
_FENCE = re.compile(r"^(\s*)(```|~~~).*?^\1\2\s*$", re.MULTILINE | re.DOTALL)


def _generators() -> dict[str, Any]:
    return {
        "cli": cli_reference.render,
        "errors": troubleshooting.render,
        "api-tiers": api_tiers,
        "unsorted": unsorted_block,
    }


CSS = "assets/stylesheets/securesession.css"


def on_files(files: Any, config: Any, **kwargs: Any) -> Any:
    """The site's own stylesheet, from docs/_gen (which holds no pages)."""
    from mkdocs.structure.files import File

    css = (Path(__file__).parent / "extra.css").read_text(encoding="utf-8")
    files.append(File.generated(config, CSS, content=css))
    _unsorted[:] = unsorted(files)
    return files


_unsorted: list[str] = []
_DIRECTIVE = re.compile(r"^::: (?P<ident>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+.*\n)*)", re.MULTILINE)


def placed(sources: list[str]) -> set[str]:
    """The public paths the ``:::`` blocks of these page sources render: the object a
    block names, and for a module its exported names (or its ``members:`` option)."""
    import textwrap

    import yaml

    covered: set[str] = set()
    for text in sources:
        for match in _DIRECTIVE.finditer(text):
            ident = match["ident"]
            covered.add(ident)
            names = api.documented_names(ident)
            if names is None:
                continue  # not a module
            options = yaml.safe_load(textwrap.dedent(match["options"])) or {}
            members = (options.get("options") or {}).get("members")
            if members is False:
                continue
            listed = names if members is None or members is True else members
            covered.update(f"{ident}.{name}" for name in listed)
    return covered


def unsorted(files: Any) -> list[str]:
    """Public names no page places: rendered on the reference's index, not lost."""
    sources = [
        Path(f.abs_src_path).read_text(encoding="utf-8")
        for f in files.documentation_pages()
        if f.abs_src_path
    ]
    covered = placed(sources)
    paths = api.public_paths(_package())
    canonical = api.canonical_paths(_package())
    found: list[str] = []
    for module in api.PUBLIC_MODULES:
        for name in api.documented_names(module) or []:
            wanted = f"{module}.{name}"
            rendered_as = paths.get(canonical.get(wanted, ""), wanted)
            if wanted not in covered and rendered_as not in covered and rendered_as not in found:
                found.append(rendered_as)
    return found


def unsorted_block() -> str:
    if not _unsorted:
        return ""
    log.info(
        "API reference: %d public name(s) not placed on a page, rendered on its index: %s",
        len(_unsorted),
        ", ".join(_unsorted),
    )
    lines = [
        "## Not sorted into a page yet",
        "",
        "Public names added since the reference was last arranged, each rendered here "
        "from its docstring until a page of its tier lists it (a `:::` line in "
        "`docs/reference/`).",
        "",
    ]
    for path in _unsorted:
        lines += [f"::: {path}", "    options:", "      heading_level: 3", ""]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    generators = _generators()

    def generate(match: re.Match[str]) -> str:
        generator = generators.get(match["name"])
        if generator is None:
            log.warning("%s: unknown generated block %r", page.file.src_uri, match["name"])
            return match.group(0)
        return str(generator())

    markdown = _MARKER.sub(generate, markdown)
    return _outside_links(markdown, page, config)


def _outside_links(markdown: str, page: Any, config: Any) -> str:
    """Links that leave docs/ for another repository file: code on the site."""
    docs_dir = Path(config["docs_dir"]).resolve()
    repo = docs_dir.parent
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            return match.group(0)  # a URL with a scheme
        path = target.split("#", 1)[0]
        resolved = posixpath.normpath(posixpath.join(page_dir, path))
        if not resolved.startswith("../"):
            return match.group(0)  # inside docs/: MkDocs validates it
        in_repo = (docs_dir / resolved).resolve()
        if repo not in in_repo.parents and in_repo != repo:
            log.warning("%s: link %r leaves the repository", page.file.src_uri, target)
            return match.group(0)
        if not in_repo.exists():
            log.warning(
                "%s: link %r names %s, which does not exist",
                page.file.src_uri,
                target,
                in_repo.relative_to(repo),
            )
            return match.group(0)
        text = match["text"]
        shown = in_repo.relative_to(repo).as_posix()
        if text.strip("`") == shown or text.strip("`").rstrip("/") == shown:
            return f"`{shown}`"
        return f"{text} (`{shown}` in the repository)"

    parts: list[str] = []
    last = 0
    for fence in _FENCE.finditer(markdown):
        parts.append(_LINK.sub(rewrite, markdown[last : fence.start()]))
        parts.append(fence.group(0))
        last = fence.end()
    parts.append(_LINK.sub(rewrite, markdown[last:]))
    return "".join(parts)


def on_post_build(config: Any, **kwargs: Any) -> None:
    anchors: set[str] = set()
    for html_file in Path(config["site_dir"]).rglob("*.html"):
        anchors.update(_ANCHOR.findall(html_file.read_text(encoding="utf-8")))
    for problem in undocumented(anchors):
        log.warning(problem)
    for problem in troubleshooting.problems():
        log.warning(problem)


_ANCHOR = re.compile(r'\bid="(securesession(?:\.[\w]+)*)"')


def undocumented(anchors: set[str]) -> list[str]:
    """What the API reference misses, given the ids of the built site's headings.

    Every public module must have its heading, and every name it exports (every fixture
    of the pytest plugin) must be rendered under the public name the cross-references
    use for that object (for a name exported twice, the first module's).
    """
    problems = []
    paths = api.public_paths(_package())
    canonical = api.canonical_paths(_package())
    for module, names in ((m, api.documented_names(m)) for m in api.PUBLIC_MODULES):
        if names is None:
            problems.append(f"API reference: public module {module} does not exist")
            continue
        if module not in anchors and module != "securesession":
            problems.append(f"API reference: no page renders module {module} ('::: {module}')")
        for name in names:
            wanted = f"{module}.{name}"
            rendered_as = paths.get(canonical.get(wanted, ""), wanted)
            if wanted in anchors or rendered_as in anchors:
                continue
            problems.append(
                f"API reference: {wanted} is public but no page renders it: add "
                f"'::: {rendered_as}' to a page under docs/reference/"
            )
    return problems


_loaded: list[Any] = []


def _package() -> Any:
    if not _loaded:
        _loaded.append(api.load_package())
    return _loaded[0]


def api_tiers() -> str:
    """The reference's index: each tier, its modules and their names."""
    paths = api.public_paths(_package())
    canonical = api.canonical_paths(_package())
    lines: list[str] = []
    for tier in api.TIERS:
        lines += [f"## {tier.title}", "", f"For {tier.who}.", ""]
        lines += ["| module | names |", "|---|---|"]
        for module in tier.modules:
            names = api.documented_names(module) or []
            links = []
            for name in names:
                wanted = f"{module}.{name}"
                links.append(f"[`{name}`][{paths.get(canonical.get(wanted, ''), wanted)}]")
            shown = f"[`{module}`][{module}]" if module != "securesession" else "`securesession`"
            lines.append(f"| {shown} | {', '.join(links)} |")
        lines.append("")
    return "\n".join(lines)
