"""The CLI reference, generated from the argparse parser the command itself uses.

``render()`` walks ``securesession.cli._app.build_parser()``: the usage line, the
description, every option group and every option (names, value, choices, default,
help) of the main parser and of each command, in the parser's own order. Nothing is
written by hand, so the page cannot drift from ``securesession --help``.
"""

from __future__ import annotations

import argparse
import html
import os
import re
from collections.abc import Iterator

#: Columns for usage lines, fixed so that the page does not depend on the terminal.
WIDTH = 88


def _parser() -> argparse.ArgumentParser:
    from securesession.cli._app import build_parser

    return build_parser()


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands, name -> subparser, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each command's one-line help, as ``securesession --help`` lists it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _usage(parser: argparse.ArgumentParser) -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        usage = parser.format_usage()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    # argparse indents continuation lines under the text after "usage: ".
    prefix = "usage: "
    lines = usage.rstrip().splitlines()
    lines[0] = lines[0].removeprefix(prefix)
    lines[1:] = [line.removeprefix(" " * len(prefix)) for line in lines[1:]]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, HTML left inert."""
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _code(text: str) -> str:
    return "<code>" + html.escape(text, quote=False).replace("|", "&#124;") + "</code>"


def _option_names(action: argparse.Action) -> str:
    if not action.option_strings:
        return _code(action.metavar or action.dest)
    value = ""
    if action.nargs != 0:
        if action.metavar is not None:
            value = f" {action.metavar}"
        elif action.choices is not None:
            value = " {" + ",".join(str(c) for c in action.choices) + "}"
        else:
            value = f" {action.dest.upper()}"
    return ", ".join(_code(option + value) for option in action.option_strings)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if action.help is None or action.help == argparse.SUPPRESS:
        text = ""
    else:
        text = parser._get_formatter()._expand_help(action)
    extras = []
    if action.choices is not None and action.metavar is not None:
        extras.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
    if action.nargs == argparse.ZERO_OR_MORE or (
        isinstance(action, argparse._AppendAction) and action.option_strings
    ):
        extras.append("repeatable")
    cell = _cell(text)
    if extras:
        cell += (" " if cell else "") + "(" + "; ".join(extras) + ")"
    return cell


def _groups(parser: argparse.ArgumentParser) -> Iterator[tuple[str, list[argparse.Action]]]:
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help != argparse.SUPPRESS
            and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        ]
        if actions:
            title = group.title or "options"
            if title in ("optional arguments", "options"):
                title = "options"
            yield title, actions


def _exclusive_note(parser: argparse.ArgumentParser) -> list[str]:
    notes = []
    for group in parser._mutually_exclusive_groups:
        names = [a.option_strings[0] for a in group._group_actions if a.option_strings]
        if len(names) > 1:
            notes.append("* at most one of " + ", ".join(f"`{n}`" for n in names) + " (one source)")
    return notes


def _section(
    parser: argparse.ArgumentParser, heading: str, anchor: str, guide: str | None
) -> list[str]:
    lines = [f"## {heading} {{#{anchor}}}", ""]
    lines += ["```text", _usage(parser), "```", ""]
    if parser.description:
        description = parser.description.replace("\n\n", "\x00").replace("\n", " ")
        for paragraph in description.split("\x00"):
            lines += [_escape_markdown(" ".join(paragraph.split())), ""]
    if guide:
        lines += [f"Explained in the guide: [{heading}]({guide}).", ""]
    for title, actions in _groups(parser):
        lines += [f"**{title[0].upper() + title[1:]}**", ""]
        lines += ["| option | meaning |", "|---|---|"]
        for action in actions:
            lines.append(f"| {_option_names(action)} | {_help(parser, action)} |")
        lines.append("")
    notes = _exclusive_note(parser)
    if notes:
        lines += [*notes, ""]
    if parser.epilog:
        lines += [_escape_markdown(" ".join(parser.epilog.split())), ""]
    return lines


def _escape_markdown(text: str) -> str:
    # argparse prose is plain text: keep '*', '_', '<' literal, quote 'names' as code.
    text = html.escape(text, quote=False)
    text = re.sub(r"([*_\\])", r"\\\1", text)
    return re.sub(r"'([^' ]+(?: [^' ]+)*)'", r"`\1`", text)


def render(guide: str = "../cli.md") -> str:
    """The whole reference as Markdown (sections ``##`` per command)."""
    parser = _parser()
    subcommands = commands(parser)
    helps = _help_of(parser)
    lines = ["| command | does |", "|---|---|"]
    for name in subcommands:
        lines.append(f"| [`{name}`](#{name}) | {_cell(helps.get(name, ''))} |")
    lines.append("")
    lines += _section(parser, "securesession", "securesession", None)
    for name, sub in subcommands.items():
        lines += _section(sub, f"securesession {name}", name, f"{guide}#{name}")
    return "\n".join(lines)


def option_strings() -> set[str]:
    """Every option string of the command and its subcommands (for tests)."""
    from securesession.cli._app import known_options

    return known_options(_parser())


if __name__ == "__main__":
    print(render())
