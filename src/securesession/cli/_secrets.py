"""Getting secrets into the CLI without ever taking them from argv.

argv is visible to every user of the host (``ps``, ``/proc/*/cmdline``) and lands in
shell history, so a secret has three ways in, each named on the command line:

* a prompt without echo (:func:`getpass.getpass`), only when stdin is a terminal;
* ``--<what>-stdin``: one line of standard input per flag, in a documented order;
* ``--<what>-env NAME``: the value of environment variable ``NAME``.

:func:`refuse_secrets_on_argv` runs before argparse sees argv, because argparse's own
error messages ("unrecognized arguments: hunter2") would echo the secret.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Final, TextIO

from securesession import Secret

from ._common import UsageError

__all__ = ["SecretInput", "add_secret_source", "looks_secret", "refuse_secrets_on_argv"]


def add_secret_source(
    parser: argparse.ArgumentParser | Any, flag: str, what: str, *, prompt_flag: bool = True
) -> None:
    """Register ``FLAG-stdin`` / ``FLAG-env NAME`` (/ ``FLAG-prompt``), mutually exclusive,
    on *parser* (a parser or an argument group): the ways a secret comes in."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        f"{flag}-stdin", action="store_true", help=f"read the {what} from a line of stdin"
    )
    group.add_argument(
        f"{flag}-env", metavar="NAME", help=f"read the {what} from environment variable NAME"
    )
    if prompt_flag:
        group.add_argument(
            f"{flag}-prompt", action="store_true", help=f"prompt for the {what} (no echo)"
        )


#: Option-name fragments that mean "this flag carries a secret value".
_SECRET_WORDS: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api-key",
    "api_key",
    "credential",
)


def looks_secret(option: str) -> bool:
    """Whether an option name (``--gateway-password``) suggests it carries a secret."""
    name = option.lower()
    return any(word in name for word in _SECRET_WORDS)


def refuse_secrets_on_argv(argv: Sequence[str], known_options: Iterable[str]) -> None:
    """Raise :class:`UsageError` for an unknown option that looks like it carries a secret.

    Known options (``--gateway-password-stdin``, ``--secret-header NAME``...) never take a
    secret value, by design. The message names the option, never its value.
    """
    known = set(known_options)
    for arg in argv:
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            continue
        name = arg.split("=", 1)[0]
        if name in known or not looks_secret(name):
            continue
        raise UsageError(
            f"{name} would put a secret on the command line, where other users and the "
            f"shell history can read it; {_how_to_pass(name, known)}"
        )


def _how_to_pass(name: str, known: set[str]) -> str:
    stem = name.rstrip("-")
    for candidate in (stem, stem.removesuffix("-value")):
        if f"{candidate}-stdin" in known:
            return (
                f"use {candidate}-stdin (read from standard input), {candidate}-env NAME "
                "(read from an environment variable), or omit it to be prompted"
            )
    return (
        "pass secrets with the matching --...-stdin or --...-env NAME option, or omit them "
        "to be prompted (see --help)"
    )


class SecretInput:
    """Reads secrets from a prompt, standard input or the environment.

    Each ``-stdin`` flag consumes one line of *stdin*, in the order the command
    documents; the trailing line break is dropped. Prompts happen only when *stdin*
    is a terminal, so a script never hangs on one.
    """

    def __init__(self, stdin: TextIO | None = None) -> None:
        self._stdin = stdin if stdin is not None else sys.stdin
        self._used_stdin = False

    @property
    def interactive(self) -> bool:
        """Whether a prompt can be shown (stdin is a terminal and not used for secrets)."""
        return not self._used_stdin and _isatty(self._stdin)

    def read(
        self,
        what: str,
        *,
        stdin: bool = False,
        env: str | None = None,
        flag: str,
        confirm: bool = False,
        required: bool = True,
    ) -> Secret | None:
        """Read one secret described by *what* from the source the caller chose.

        *flag* is the option stem (``--gateway-password``) used in error messages.
        With no source: prompt if interactive, else fail (or return ``None`` if not
        *required*).
        """
        if stdin:
            return Secret(self._read_line(what, flag))
        if env is not None:
            value = os.environ.get(env)
            if value is None:
                raise UsageError(f"{flag}-env: environment variable {env} is not set")
            if not value:
                raise UsageError(f"{flag}-env: environment variable {env} is empty")
            return Secret(value)
        if not self.interactive:
            if not required:
                return None
            raise UsageError(
                f"{what} is needed: pass {flag}-stdin or {flag}-env NAME "
                "(standard input is not a terminal, so there is no prompt)"
            )
        return Secret(self.prompt(what, confirm=confirm))

    def prompt(self, what: str, *, confirm: bool = False) -> str:
        """Ask for *what* without echo (twice with *confirm*)."""
        value = getpass.getpass(f"{what}: ")
        if not value:
            raise UsageError(f"{what} is empty")
        if confirm and getpass.getpass(f"{what} (again): ") != value:
            raise UsageError(f"the two entries of {what} differ")
        return value

    def _read_line(self, what: str, flag: str) -> str:
        self._used_stdin = True
        line = self._stdin.readline()
        if not line:
            raise UsageError(f"{flag}-stdin: expected {what} on standard input, got end of input")
        value = line.rstrip("\r\n")
        if not value:
            raise UsageError(f"{flag}-stdin: {what} read from standard input is empty")
        return value


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
