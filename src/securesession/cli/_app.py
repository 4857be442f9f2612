"""The argument parser, and the one place errors become exit codes and messages."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn, get_args

from securesession import AuthMode, InvalidURLError, SecureSessionError, __version__
from securesession._actor import acting_as, check_actor
from securesession._urls import canonicalize

from ._common import EXIT_FAILED, EXIT_USAGE, CommandError, UsageError
from ._secrets import add_secret_source, refuse_secrets_on_argv

__all__ = ["build_parser", "known_options", "run"]

PROG = "securesession"
Handler = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Handler:
    """The handler *target* (``module:function``), imported when its command runs:
    ``list`` need not load requests."""
    module, name = target.split(":")

    def handler(args: argparse.Namespace) -> int:
        command: Handler = getattr(importlib.import_module(module, __package__), name)
        return command(args)

    return handler


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (one line, no echoed values)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            # argparse would echo every leftover token, and a stray token may well be
            # a secret typed in the wrong place: show option names only.
            tokens = message.split(":", 1)[1].split()
            options = [token.split("=", 1)[0] for token in tokens if token.startswith("-")]
            others = len(tokens) - len(options)
            parts = options + ([f"{others} other value(s), not shown"] if others else [])
            message = "unrecognized arguments: " + ", ".join(parts)
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _url(value: str) -> str:
    """argparse type: a URL that canonicalises (so a bad URL is a usage error)."""
    try:
        canonicalize(value)
    except InvalidURLError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return number


def _actor(value: str) -> str:
    """argparse type: a name audit records can carry (printable, short)."""
    try:
        return check_actor(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options(parser: argparse.ArgumentParser, *, in_subcommand: bool) -> None:
    # The same options are accepted before and after the command name; in the
    # subcommand their default is SUPPRESS so it does not overwrite the main one.
    unset: Any = argparse.SUPPRESS if in_subcommand else None
    group = parser.add_argument_group("configuration")
    group.add_argument(
        "--registry",
        metavar="URL",
        default=unset,
        help="registry URL (default: $SECURESESSION_REGISTRY, else a SQLite file in the "
        "user data directory)",
    )
    group.add_argument(
        "--key-file",
        metavar="PATH",
        default=unset,
        help="master key file (default: $SECURESESSION_KEY_FILE, else the key in "
        "$SECURESESSION_MASTER_KEY, else master.key in the user config directory)",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if in_subcommand else False,
        help="show tracebacks and the library's debug log on stderr",
    )
    group.add_argument(
        "--actor",
        metavar="NAME",
        type=_actor,
        default=unset,
        help="who the audit records of this command's changes name (default: the OS user)",
    )


# -- the options, declared as data -------------------------------------------------------

#: A parser, an argument group or a mutually exclusive group: what options are added to.
_Container = argparse._ActionsContainer
#: Adds some options to a container (an argument, a group of them, a secret's sources).
_Spec = Callable[[_Container], object]


def _arg(*flags: str, **kwargs: Any) -> _Spec:
    """One ``add_argument(*flags, **kwargs)``, to be made on the container given later."""
    return lambda container: container.add_argument(*flags, **kwargs)


def _flag(*flags: str, help: str) -> _Spec:
    """An option that takes no value: true when given, else false."""
    return _arg(*flags, action="store_true", help=help)


def _declare(container: _Container, specs: Sequence[_Spec]) -> None:
    for spec in specs:
        spec(container)


def _group(title: str, *specs: _Spec) -> _Spec:
    """An argument group (a heading of ``--help``) holding *specs*."""
    return lambda container: _declare(container.add_argument_group(title), specs)


def _one_of(*specs: _Spec, required: bool = False) -> _Spec:
    """Options of which at most one (with *required*: exactly one) may be given."""
    return lambda container: _declare(
        container.add_mutually_exclusive_group(required=required), specs
    )


def _secret(flag: str, what: str, *, prompt_flag: bool = True) -> _Spec:
    """The ways a secret comes in: ``FLAG-stdin``, ``FLAG-env NAME`` (, ``FLAG-prompt``)."""
    return lambda container: add_secret_source(container, flag, what, prompt_flag=prompt_flag)


def _tls_options(container: _Container) -> None:
    """``add``'s TLS options (declared in cli/_tlsopts.py, with the code that reads them)."""
    from ._tlsopts import add_tls_options

    add_tls_options(container)


_JSON = _flag("--json", help="machine-readable output")
_URL = _arg("url", type=_url, metavar="URL")
_ENTRY_URL = _arg("url", type=_url, metavar="URL", help="the entry's URL prefix")
_UNDER = _arg(
    "--under",
    action="append",
    metavar="URL",
    type=_url,
    help="only entries at or below URL (repeatable)",
)
_PASSPHRASE = _secret("--passphrase", "transfer passphrase", prompt_flag=False)


def _credential(role: str, mode: str, user_header: str, password_header: str) -> _Spec:
    """``add``'s options of the gateway or the request credential."""
    return _group(
        f"{role} credential",
        _arg(f"--{role}-user", metavar="NAME", help=f"{role} user name"),
        _secret(f"--{role}-password", f"{role} password or token"),
        _arg(
            f"--{role}-auth",
            choices=get_args(AuthMode),
            default=mode,
            help=f"how the {role} credential is injected (default: {mode})",
        ),
        _arg(
            f"--{role}-user-header",
            metavar="NAME",
            default=user_header,
            help=f"user header in 'headers' mode (default: {user_header})",
        ),
        _arg(
            f"--{role}-password-header",
            metavar="NAME",
            default=password_header,
            help=f"password header in 'headers' mode (default: {password_header})",
        ),
    )


def _registry_key(role: str) -> _Spec:
    """``diff``'s and ``sync``'s key of the SRC or DST registry."""
    name = role.upper()
    return _group(
        f"{name} key (one of)",
        _one_of(
            _arg(f"--{role}-key-file", metavar="PATH", help=f"{name}'s master key file"),
            _arg(
                f"--{role}-key-env",
                metavar="NAME",
                help=f"environment variable NAME holds {name}'s key (base64url)",
            ),
            required=True,
        ),
    )


#: What ``diff SRC DST`` and ``sync SRC DST`` both take: two registries, each with its key.
_TWO_REGISTRIES = (
    _arg("src", metavar="SRC", help="the source registry URL"),
    _arg("dst", metavar="DST", help="the destination registry URL"),
    _registry_key("src"),
    _registry_key("dst"),
    _arg(
        "--map",
        action="append",
        metavar="SRC_PREFIX=DST_PREFIX",
        help="compare SRC URLs under SRC_PREFIX as DST_PREFIX (repeatable; the scheme "
        "must stay the same)",
    ),
    _JSON,
)


class _Command(NamedTuple):
    """A subcommand: its name, its handler (``module:function``, imported when the
    command runs), its line in the main ``--help``, its own ``--help`` text (default:
    that line) and its options."""

    name: str
    handler: str
    help: str
    description: str | None = None
    arguments: tuple[_Spec, ...] = ()
    #: The exit code of a failure (``diff``: 2, since its 1 means "they differ").
    failure_exit: int = EXIT_FAILED


_COMMANDS = (
    _Command("init", "._commands:cmd_init", "create the key file and the registry"),
    _Command(
        "add",
        "._commands:cmd_add",
        "add or replace an entry (secrets from a prompt, stdin or the environment)",
        "Add an entry for URL and every URL below it (path-segment boundary).\n\n"
        "Secrets never come from the command line. Each secret is prompted for without\n"
        "echo when stdin is a terminal, or read from a line of standard input\n"
        "(--...-stdin) or from an environment variable (--...-env NAME). Several\n"
        "--...-stdin flags read one line each, in this order: gateway password, request\n"
        "password, --secret-header-stdin values (in the order given), client certificate\n"
        "passphrase.",
        arguments=(
            _arg("url", type=_url, metavar="URL", help="the service URL prefix"),
            _flag("--replace", help="replace an existing entry"),
            _arg("--description", metavar="TEXT", help="a note shown by list/show"),
            _credential("gateway", "headers", "X-Gateway-User", "X-Gateway-Password"),
            _credential("request", "basic", "X-Request-User", "X-Request-Password"),
            _group(
                "secret headers (an API key, say)",
                _arg(
                    "--secret-header",
                    action="append",
                    metavar="NAME",
                    help="prompt for NAME's value",
                ),
                _arg(
                    "--secret-header-stdin",
                    action="append",
                    metavar="NAME",
                    help="read NAME's value from a line of stdin",
                ),
                _arg(
                    "--secret-header-env",
                    action="append",
                    metavar="NAME=ENVVAR",
                    help="read NAME's value from environment variable ENVVAR",
                ),
            ),
            _tls_options,
        ),
    ),
    _Command(
        "list", "._commands:cmd_list", "list entries (never secrets)", arguments=(_UNDER, _JSON)
    ),
    _Command(
        "show",
        "._commands:cmd_show",
        "show one entry",
        arguments=(
            _ENTRY_URL,
            _JSON,
            _flag(
                "--reveal",
                help="also print the secrets (asks first; only when stdout is a terminal)",
            ),
            _flag("--yes", help="with --reveal: do not ask"),
        ),
    ),
    _Command("remove", "._commands:cmd_remove", "remove one entry", arguments=(_ENTRY_URL,)),
    _Command(
        "match",
        "._commands:cmd_match",
        "explain which entry a URL would use, and why",
        arguments=(_URL, _JSON),
    ),
    _Command(
        "rotate-key",
        "._rotate:cmd_rotate_key",
        "new master key; re-encrypt everything in one transaction (or in stages)",
        "Generate a new master key and re-encrypt every secret under it in one\n"
        "transaction. The new key replaces the key file atomically; the old key file\n"
        "is kept beside it as <name>.<UTC time>.bak (mode 0600).\n\n"
        "Across a fleet, rotate in stages, so that no host fails: --stage adds a new\n"
        "key to the key file (decrypt-only); copy the key file to every host and\n"
        "restart them; --commit re-encrypts every entry under it in one transaction\n"
        "and makes it the active key; --retire KEY_ID drops the old key once no entry\n"
        "uses it.",
        arguments=(
            _one_of(
                _flag(
                    "--stage",
                    help="add a new key to the key file as staged (decrypt-only); print its key id",
                ),
                _flag(
                    "--commit",
                    help="re-encrypt every entry under the staged key in one transaction; it "
                    "becomes the active key, the old one decrypt-only",
                ),
                _arg(
                    "--retire",
                    metavar="KEY_ID",
                    help="drop key KEY_ID from the key file (refused while an entry uses it, "
                    "or while it is the active key)",
                ),
                _flag(
                    "--reset-stage",
                    help="record in the registry that no key is staged, whatever it recorded "
                    "(also when that record is unreadable); no key file changes",
                ),
            ),
            _arg(
                "--new-key-file",
                metavar="PATH",
                help="plain rotation: write the new key to PATH instead of replacing the key "
                "file (required when the key comes from $SECURESESSION_MASTER_KEY)",
            ),
        ),
    ),
    _Command(
        "upgrade",
        "._upgrade:cmd_upgrade",
        "authenticate the entries written by securesession 0.1.0, under the same key",
        "Entries written by securesession 0.1.0 do not authenticate their settings\n"
        "(injection modes, header names, TLS profile), so registries refuse them.\n"
        "Re-seal them in the current, authenticated format under the key the registry\n"
        "already uses, in one transaction, and list them; no key changes. The upgrade\n"
        "vouches for their settings as stored: check each (show URL) first.",
        arguments=(_flag("--dry-run", help="list the legacy entries; change nothing"),),
    ),
    _Command(
        "export",
        "._bundle:cmd_export",
        "write entries to an encrypted bundle",
        "Write entries to FILE, encrypted and authenticated under a transfer passphrase\n"
        "(prompted twice, or --passphrase-stdin / --passphrase-env NAME) or, with\n"
        "--to-key-file, under the target environment's master key.",
        arguments=(
            _arg("file", metavar="FILE"),
            _UNDER,
            _PASSPHRASE,
            _arg(
                "--to-key-file",
                metavar="PATH",
                help="encrypt under this key file instead of a passphrase",
            ),
            _flag("--force", help="overwrite FILE"),
        ),
    ),
    _Command(
        "import",
        "._bundle:cmd_import",
        "import entries from a bundle",
        "Import the entries of a bundle written by 'export'. The whole bundle is\n"
        "authenticated and checked before anything is written: a corrupt or tampered\n"
        "bundle imports nothing.",
        arguments=(
            _arg("file", metavar="FILE"),
            _PASSPHRASE,
            _arg(
                "--bundle-key-file",
                metavar="PATH",
                help="key of a key-protected bundle (default: this registry's key)",
            ),
            _arg(
                "--on-conflict",
                choices=("fail", "skip", "replace"),
                default="fail",
                help="an entry that exists with other settings or secrets: fail (default, "
                "import nothing), skip it, or replace it",
            ),
            _flag("--dry-run", help="report only; write nothing"),
        ),
    ),
    _Command(
        "diff",
        "._sync:cmd_diff",
        "compare two registries (secrets as same/differs, never shown)",
        "List the entries only in SRC, only in DST, and changed: for a changed entry its\n"
        "settings diff, and each secret field as 'same' or 'differs' (values are compared\n"
        "in memory and never shown). Exit code 0 when the registries are the same, 1 when\n"
        "they differ, 2 on error.",
        arguments=_TWO_REGISTRIES,
        # diff(1)'s convention: 1 means "they differ", so a failure must be 2.
        failure_exit=EXIT_USAGE,
    ),
    _Command(
        "sync",
        "._sync:cmd_sync",
        "make DST hold what SRC holds: a plan, or --apply it in one transaction",
        "Print the plan that makes DST hold SRC's entries; --apply carries it out in one\n"
        "transaction on DST, re-encrypting the secrets under DST's key. An entry changed\n"
        "in DST since the last sync (or never written by one) is a conflict, left alone\n"
        "unless --force. Exit code 1 on conflicts (nothing written).",
        arguments=(
            *_TWO_REGISTRIES,
            _arg(
                "--only",
                action="append",
                metavar="PREFIX",
                type=_url,
                help="only SRC entries at or below PREFIX, and DST entries at or below its "
                "mapped prefix (repeatable)",
            ),
            _flag("--delete", help="remove DST entries that are absent from SRC"),
            _flag("--force", help="overwrite or remove conflicting DST entries"),
            _flag("--apply", help="carry the plan out (default: print it)"),
        ),
    ),
    _Command(
        "request",
        "._request:cmd_request",
        "send a request through SecureSession (a tiny curl)",
        "Send METHOD URL with the matching entry's credentials. The status line and\n"
        "echoed headers go to stderr (injected values redacted), the body to stdout.\n"
        "Exit code 1 when the status is 400 or above.",
        arguments=(
            _arg("method", metavar="METHOD"),
            _URL,
            _arg("-H", "--header", action="append", metavar="'NAME: VALUE'"),
            _arg("--data", metavar="DATA", help="request body; @FILE or @- for stdin"),
            _arg(
                "--json",
                dest="json_body",
                metavar="JSON",
                help="JSON request body (sets Content-Type); @FILE or @-",
            ),
            _arg("-o", "--output", metavar="FILE", help="write the body to FILE"),
            _arg(
                "--timeout",
                type=_positive,
                default=30.0,
                metavar="SECONDS",
                help="connect and read timeout (default: 30)",
            ),
            _arg("--cacert", metavar="FILE", help="trust this CA bundle"),
            _flag("--strict", help="refuse a URL that has no registry entry"),
            _flag("--no-redirects", help="do not follow redirects"),
            _flag("-i", "--include", help="echo the response headers"),
            _flag("-v", "--verbose", help="echo request and response headers of every hop"),
        ),
    ),
    _Command(
        "check",
        "._check:cmd_check",
        "do the TLS handshake for URL's entry and explain the outcome",
        "Do the TLS handshake the matching entry's profile prescribes (client certificate,\n"
        "versions, CA bundle, pins, CRL) without sending a request, and print the\n"
        "protocol, cipher, server certificate and its pin, the client certificate used,\n"
        "or what failed and how to fix it. Exit code 1 when the handshake fails.",
        arguments=(
            _URL,
            _JSON,
            _arg(
                "--timeout", type=_positive, default=10.0, metavar="SECONDS", help="(default: 10)"
            ),
            _arg(
                "--cacert",
                metavar="FILE",
                help="CA bundle for a URL with no entry (default: certifi)",
            ),
        ),
    ),
    _Command(
        "log",
        "._log:cmd_log",
        "show the audit log of the registry's changes, or verify it",
        "Show the audit log: one record per change (time, operation, entry, revision,\n"
        "names of the changed fields, actor), never a value. --verify checks that no\n"
        "record was removed, edited, reordered or copied from another registry, and that\n"
        "every change of the registry has its record. Exit code 1 when it fails.",
        arguments=(
            _arg(
                "--since",
                metavar="TIME",
                help="records from TIME on: ISO 8601, or an age (90m, 12h, 7d)",
            ),
            _arg("--entry", metavar="URL", type=_url, help="records of this entry only"),
            _JSON,
            _flag("--verify", help="check the whole log; exit 1 if it is not intact"),
            _arg(
                "--expect-head",
                metavar="SEQ:SHA256",
                help="with --verify: also fail unless record SEQ has this digest (a head "
                "printed by an earlier verify and kept elsewhere)",
            ),
        ),
    ),
    _Command(
        "demo",
        "._demo:cmd_demo",
        "a self-contained tour: throwaway registry, local mutual-TLS gateway, one call",
        arguments=(_flag("--keep", help="keep the throwaway directory and print its path"),),
    ),
)


def _add_parser(subparsers: Any, command: _Command) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        command.name,
        help=command.help,
        description=command.description or command.help,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser, in_subcommand=True)
    parser.set_defaults(handler=_lazy(command.handler), failure_exit=command.failure_exit)
    _declare(parser, command.arguments)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Manage a securesession credential registry and call services through it.",
        allow_abbrev=False,
        epilog="Exit codes: 0 ok, 1 operation failed, 2 usage error. "
        "Run 'securesession demo' for a tour.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common_options(parser, in_subcommand=False)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        _add_parser(subparsers, command)
    return parser


def known_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of *parser* and its subcommands."""
    options: set[str] = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        options.update(current._option_string_actions)
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
    return options


def _wants_debug(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--debug":
            return True
    return False


def run(argv: Sequence[str]) -> int:
    """Parse *argv*, run the command, map every failure to an exit code."""
    debug = _wants_debug(argv)
    _configure_logging(debug)
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        refuse_secrets_on_argv(argv, known_options(parser))
        args = parser.parse_args(argv)
        handler: Handler = args.handler
        with acting_as(getattr(args, "actor", None)):
            return handler(args)
    except SystemExit as exc:  # --help, --version
        if exc.code is None:
            return 0
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except UsageError as exc:
        return _fail(exc, EXIT_USAGE, debug)
    except (CommandError, SecureSessionError) as exc:
        return _fail(exc, _failure_exit(args), debug)
    except BrokenPipeError:
        # The reader went away (`securesession list | head`): not worth a message, and
        # Python would complain again when flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _failure_exit(args)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        return _fail(exc, _failure_exit(args), debug, f"{exc.strerror or exc}{where}")
    except KeyboardInterrupt as exc:
        return _fail(exc, _failure_exit(args), debug, "interrupted")


def _failure_exit(args: argparse.Namespace | None) -> int:
    """The exit code of a failed command: 1, or what the command chose (``diff``: 2,
    since its 1 means "they differ")."""
    code: int = getattr(args, "failure_exit", EXIT_FAILED)
    return code


def _configure_logging(debug: bool) -> None:
    # The library logs warnings worth an operator's eye (a certificate about to
    # expire, legacy TLS in use); never a secret, so they may go to stderr.
    # Only the library's own logger: urllib3's debug lines carry full request paths,
    # query strings (and any token in them) included.
    library = logging.getLogger("securesession")
    library.setLevel(logging.DEBUG if debug else logging.WARNING)
    if any(isinstance(h, _StderrHandler) for h in library.handlers):
        return  # a nested run (the demo runs commands in-process)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    library.addHandler(handler)
    library.propagate = False


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (the demo redirects it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging must never break the command
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def _fail(exc: BaseException, code: int, debug: bool, message: str | None = None) -> int:
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    text = " ".join((message or str(exc) or type(exc).__name__).split())
    try:
        sys.stderr.write(f"{PROG}: error: {text}\n")
        sys.stderr.flush()
    except OSError:
        pass
    return code
