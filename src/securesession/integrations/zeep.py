"""zeep: SOAP over a SecureSession, with the WS-Security UsernameToken taken from the registry.

:class:`SecureTransport` is a zeep ``Transport`` over a
:class:`~securesession.SecureSession`. Everything zeep sends goes through the session: the
WSDL and XSD downloads and every operation's POST carry the entry of their own URL (its
HTTP credentials, its TLS profile and client certificate). What it adds is the SOAP
credential: when the entry matching the address an envelope is posted to holds a
credential in mode ``"wsse"`` (``request_auth="wsse"`` or ``gateway_auth="wsse"``), that
credential is written into the envelope as a WS-Security ``UsernameToken``, by zeep's own
:class:`zeep.wsse.username.UsernameToken`, right before the envelope is posted. The
password never sits in application code, and each envelope gets the token of the entry of
the URL it is sent to, at that entry's current revision.

The token is filled in :meth:`SecureTransport.post_xml`, the one step where zeep knows
the address (its ``wsse=`` objects are applied earlier, without it), so:

* it is prepended to the ``wsse:Security`` header, after any ``wsse=`` of the client has
  run (as WS-Security orders header elements), and a ``UsernameToken`` the client
  already filled (``zeep.Client(..., wsse=UsernameToken(...))``) wins: the registry's is
  not added then;
* an envelope carrying the registry's token is posted without following redirects (a 307
  or 308 would re-send the body, and its password, to the new location): a redirect
  answer raises :class:`zeep.exceptions.TransportError`;
* the envelope is logged (at DEBUG, by ``securesession.integrations.zeep``) with every
  ``wsse:Password`` replaced by ``[REDACTED]``; zeep's own transport logger does not see
  it.

``client.create_message(...)`` does not go through the transport, so the envelope it
returns has no registry token. The asynchronous ``zeep.AsyncTransport`` (httpx) is not
covered: a ``SecureSession`` is a requests session.

Requires zeep (``pip install 'securesession[zeep]'``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Final

try:
    from zeep import ns
    from zeep.exceptions import TransportError
    from zeep.transports import Transport
    from zeep.wsdl.utils import etree_to_string
    from zeep.wsse import utils as wsse_utils
    from zeep.wsse.username import UsernameToken
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "securesession.integrations.zeep needs zeep: pip install 'securesession[zeep]'"
    ) from exc

from requests import Response

from .. import Credential, SecureSession, ServiceEntry, redacted_url

__all__ = ["REDACTED", "SecureTransport", "wsse_credential"]

logger = logging.getLogger(__name__)

#: What the DEBUG log of an envelope shows instead of a ``wsse:Password`` value.
REDACTED: Final = "[REDACTED]"

_USERNAME_TOKEN: Final = f"{{{ns.WSSE}}}UsernameToken"
_PASSWORD: Final = f"{{{ns.WSSE}}}Password"


def wsse_credential(entry: ServiceEntry) -> Credential | None:
    """The credential of *entry* in mode ``"wsse"`` (gateway or request; an entry holds
    at most one), or ``None``."""
    for credential, mode in (
        (entry.request, entry.request_auth),
        (entry.gateway, entry.gateway_auth),
    ):
        if credential is not None and mode == "wsse":
            return credential
    return None


class SecureTransport(Transport):  # type: ignore[misc]
    """A zeep transport over *session*, filling each envelope's WS-Security
    ``UsernameToken`` from the ``"wsse"`` credential of the entry its address matches.

    *use_digest* sends ``PasswordDigest`` (Base64 of SHA-1 of nonce, creation time and
    password, with a fresh nonce per envelope) instead of ``PasswordText``;
    *zulu_timestamp* and *hash_password* are passed to zeep's ``UsernameToken`` for
    services that want them. *cache*, *timeout* and *operation_timeout* are zeep's
    ``Transport`` options. zeep sets its ``User-Agent`` on *session* and mounts its
    ``file://`` adapter there, as it does for any session it is given; the transport
    never closes *session*.
    """

    def __init__(
        self,
        session: SecureSession,
        *,
        use_digest: bool = False,
        zulu_timestamp: bool | None = None,
        hash_password: bool | None = None,
        cache: Any = None,
        timeout: float = 300,
        operation_timeout: float | None = None,
    ) -> None:
        self._close_session = False  # read by zeep's Transport.__del__, even if we raise
        if not isinstance(session, SecureSession):
            raise TypeError(
                f"SecureTransport needs a SecureSession, not {type(session).__name__}: "
                "the UsernameToken comes from the session's registry"
            )
        super().__init__(
            cache=cache, timeout=timeout, operation_timeout=operation_timeout, session=session
        )
        self.secure_session = session
        self.use_digest = use_digest
        self.zulu_timestamp = zulu_timestamp
        self.hash_password = hash_password

    def _username_token(self, address: str) -> UsernameToken | None:
        """zeep's ``UsernameToken`` for the entry *address* matches (through the
        session's cache), or ``None`` when no entry matches or the entry holds no
        ``"wsse"`` credential."""
        entry = self.secure_session.entry_for(address)
        credential = None if entry is None else wsse_credential(entry)
        if credential is None:
            return None
        return UsernameToken(
            credential.username,
            credential.password.reveal(),
            use_digest=self.use_digest,
            zulu_timestamp=self.zulu_timestamp,
            hash_password=self.hash_password,
        )

    def post_xml(self, address: str, envelope: Any, headers: dict[str, str]) -> Response:
        """Fill the registry's ``UsernameToken`` for *address* into *envelope*, then
        post it through the session (see the module documentation)."""
        if not self._add_token(address, envelope, headers):
            response: Response = super().post_xml(address, envelope, headers)
            return response
        message = etree_to_string(envelope)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "HTTP Post to %s (WS-Security UsernameToken from the registry):\n%s",
                redacted_url(address),
                _redacted(envelope),
            )
        response = self.secure_session.post(
            address,
            data=message,
            headers=headers,
            timeout=self.operation_timeout,
            allow_redirects=False,
        )
        logger.debug(
            "HTTP Response from %s (status: %d)", redacted_url(address), response.status_code
        )
        if response.is_redirect:
            response.close()
            raise TransportError(
                f"the SOAP service at {redacted_url(address)} answered {response.status_code} "
                "(a redirect); not followed, since the envelope carries the entry's "
                "WS-Security credential",
                status_code=response.status_code,
            )
        return response

    def _add_token(self, address: str, envelope: Any, headers: dict[str, str]) -> bool:
        token = self._username_token(address)
        if token is None:
            return False
        security = wsse_utils.get_security_header(envelope)
        placeholder = security.find(_USERNAME_TOKEN)
        if placeholder is not None and len(placeholder):
            logger.debug(
                "envelope to %s already carries a UsernameToken (the client's wsse=); "
                "the registry's is not added",
                redacted_url(address),
            )
            return False
        if placeholder is None:
            # Prepended, as WS-Security orders header elements; zeep's token fills it.
            security.insert(0, wsse_utils.WSSE.UsernameToken())
        token.apply(envelope, headers)
        return True


def _redacted(envelope: Any) -> str:
    shown = copy.deepcopy(envelope)
    for password in shown.iter(_PASSWORD):
        password.text = REDACTED
    text: bytes = etree_to_string(shown)
    return text.decode("utf-8")
