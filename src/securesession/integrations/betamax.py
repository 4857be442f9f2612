"""betamax: cassettes that never hold an injected secret, for entries without a TLS profile.

:func:`betamax_before_record` is a ``before_record`` hook that replaces the value of every
header the registry's entries inject with a placeholder before betamax keeps the
interaction; :func:`betamax_redacting` registers it for the time of a ``with`` block
(betamax's hooks are global). Requests are matched on method and URI by default, so the
placeholders do not get in the way of replay.

Entries with a TLS profile cannot be recorded through betamax: betamax mounts its own
adapter, and a :class:`~securesession.SecureSession` refuses to send a TLS-profile request
through any adapter but its ``SecureAdapter`` (:class:`~securesession.TLSConfigError`,
before anything is sent). Record those with vcrpy (:mod:`securesession.integrations.vcr`).

This module does not import betamax; the hook only edits betamax's interaction data.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from .. import Registry, SecureSession, ServiceEntry
from ._names import injected_header_names

__all__ = ["REDACTED", "BeforeRecordHook", "betamax_before_record", "betamax_redacting"]

#: What a cassette holds instead of an injected header's value.
REDACTED: Final = "[REDACTED]"

#: betamax calls its hooks as ``hook(interaction, cassette)``.
BeforeRecordHook = Callable[[Any, Any], None]


def betamax_before_record(
    source: Registry | SecureSession | Iterable[ServiceEntry],
    *,
    placeholder: str = REDACTED,
) -> BeforeRecordHook:
    """A betamax ``before_record`` hook putting *placeholder* in place of the value of
    every header :func:`~securesession.integrations.injected_header_names` lists for
    *source* (a registry, a session or entries), in each recorded request.

    Register it with ``Betamax.configure().before_record(callback=hook)`` (for the
    whole process) or use :func:`betamax_redacting`. The names are read when this is
    called (it decrypts every entry): build the hook after the entries exist.
    """
    names = frozenset(name.lower() for name in injected_header_names(source))

    def before_record(interaction: Any, cassette: Any = None) -> None:
        headers = interaction.data["request"]["headers"]
        for key in list(headers):
            if key.lower() in names:
                headers[key] = [placeholder]

    return before_record


@contextlib.contextmanager
def betamax_redacting(
    source: Registry | SecureSession | Iterable[ServiceEntry],
    *,
    placeholder: str = REDACTED,
) -> Iterator[BeforeRecordHook]:
    """Register :func:`betamax_before_record` for *source* with betamax for the time of
    the ``with`` block, and remove it afterwards. Requires betamax."""
    # betamax's hook table (what Betamax.configure().before_record appends to); betamax
    # has no typing, and no call to remove a hook.
    hooks: list[Any] = importlib.import_module("betamax.cassette").Cassette.hooks["before_record"]
    hook = betamax_before_record(source, placeholder=placeholder)
    hooks.append(hook)
    try:
        yield hook
    finally:
        if hook in hooks:
            hooks.remove(hook)
