"""Vault and OpenBao: one authenticated client, shared by every Vault feature.

Both engines speak the same HTTP API, reached through ``hvac`` (the ``vault``
extra, imported on first use so nothing here needs it until a connection is made).

:class:`VaultConnection` is the one place that holds the engine's address, TLS
verification, namespace, timeout and credentials, and the one place that builds a
client, so the KV registry backend (:mod:`securesession._registry.vault`) and the
Transit envelope (:mod:`securesession._vault`) share its behaviour:

* **Credentials**, first match wins: an explicit ``token=`` or ``approle=``, an
  explicit ``token_file=``, the ``VAULT_TOKEN`` / ``BAO_TOKEN`` environment
  variables, an AppRole from ``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID`` (or the
  ``BAO_`` spellings), then the CLI's ``~/.vault-token``.
* **Renewal**: once two thirds of the token's TTL have passed, the next request
  renews it (``auth/token/renew-self``); an AppRole token that can no longer be
  renewed, or that the engine rejects, is replaced by logging in again.
* **Errors** become one :class:`~securesession.VaultError` whose ``reason`` and
  message say which of sealed, network, forbidden (naming the policy path and the
  capability to grant), token, conflict or other it was. No message, log line or
  ``repr`` carries a token or secret id.

This module imports nothing of the cryptography: :mod:`securesession._crypto`
names :class:`VaultConnection` in an annotation without depending on Transit.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from ._exceptions import ConfigurationError, VaultError
from ._secret import Secret
from ._tls import find_ssl_error

__all__ = ["DEFAULT_TIMEOUT", "AppRole", "VaultConnection", "check_loose_options", "engine_url"]

logger = logging.getLogger("securesession")

T = TypeVar("T")

TOKEN_ENV_VARS: Final = ("VAULT_TOKEN", "BAO_TOKEN")
ROLE_ID_ENV_VARS: Final = ("VAULT_ROLE_ID", "BAO_ROLE_ID")
SECRET_ID_ENV_VARS: Final = ("VAULT_SECRET_ID", "BAO_SECRET_ID")
CACERT_ENV_VARS: Final = ("VAULT_CACERT", "BAO_CACERT")
NAMESPACE_ENV_VARS: Final = ("VAULT_NAMESPACE", "BAO_NAMESPACE")
#: Seconds to wait for the engine: short, because a registry lookup waits on it.
DEFAULT_TIMEOUT: Final = 5.0
# Renew a token once this fraction of its TTL has passed: early enough that a few
# failed attempts still leave time, late enough not to renew on every request.
_RENEW_FRACTION: Final = 2 / 3


def _import_hvac() -> Any:  # the hvac module (untyped)
    try:
        import hvac
    except ImportError:
        raise ConfigurationError(
            "Vault/OpenBao support needs the 'vault' extra: pip install 'securesession[vault]'"
        ) from None
    return hvac


def _env_first(names: tuple[str, ...]) -> tuple[str, str] | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return name, value
    return None


def engine_url(url: str) -> str:
    """``scheme://host:port`` of the engine; plain http only to a loopback address,
    because a token (and, for Transit, the unwrapped key) crosses that connection."""
    try:
        parts = urlsplit(url.strip())
        hostname = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise ConfigurationError("Vault address is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not hostname:
        raise ConfigurationError(
            "Vault address must look like https://vault.example.com:8200 (http:// only on loopback)"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(
            "Vault address must not carry credentials; pass token= or approle="
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigurationError(
            "Vault address is scheme://host:port only (no path, query or fragment)"
        )
    if parts.scheme == "http" and not _is_loopback(hostname):
        raise ConfigurationError(
            f"refusing plain http:// to {hostname}: the token would cross the network in "
            "clear; use https:// (http:// is allowed on loopback only, e.g. a local agent)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class AppRole:
    """AppRole login credentials: a role id (an identifier) and a secret id (a secret).

    The ``repr`` shows the role id and mount, never the secret id.
    """

    __slots__ = ("mount", "role_id", "secret_id")

    def __init__(self, role_id: str, secret_id: str | Secret, *, mount: str = "approle") -> None:
        if not isinstance(role_id, str) or not role_id.strip():
            raise ConfigurationError("AppRole role_id is empty")
        self.role_id = role_id.strip()
        self.secret_id = Secret(secret_id)
        if not self.secret_id.reveal().strip():
            raise ConfigurationError("AppRole secret_id is empty")
        self.mount = mount.strip("/")

    def __repr__(self) -> str:
        return (
            f"AppRole(role_id={self.role_id!r}, secret_id={self.secret_id!r}, mount={self.mount!r})"
        )

    def __reduce__(self) -> str:
        raise TypeError("AppRole cannot be pickled")

    @classmethod
    def from_env(cls, *, mount: str = "approle") -> AppRole | None:
        """The AppRole in ``VAULT_ROLE_ID`` + ``VAULT_SECRET_ID`` (or ``BAO_*``), if set."""
        role = _env_first(ROLE_ID_ENV_VARS)
        secret = _env_first(SECRET_ID_ENV_VARS)
        if role is None and secret is None:
            return None
        if role is None or secret is None:
            missing = ROLE_ID_ENV_VARS[0] if role is None else SECRET_ID_ENV_VARS[0]
            raise ConfigurationError(f"AppRole from the environment: {missing} is not set")
        return cls(role[1], secret[1], mount=mount)


class VaultConnection:
    """One authenticated ``hvac`` client for a Vault or OpenBao server. Thread-safe.

    The only place the connection settings are declared: every Vault feature
    (Transit wrapping, ``MasterKey.from_vault_transit``, the ``vault+https``
    registry) takes a connection, so passing one to each shares its login.
    Credentials are resolved as the module docstring describes; nothing is sent
    until the first request (an AppRole logs in then). ``verify`` is ``True``,
    ``False`` or a CA bundle path (default: the ``VAULT_CACERT`` / ``BAO_CACERT``
    file if set). ``namespace`` defaults to ``VAULT_NAMESPACE`` / ``BAO_NAMESPACE``.
    *timeout* is in seconds per request.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | Secret | None = None,
        approle: AppRole | None = None,
        token_file: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        verify: bool | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = engine_url(url)
        hvac = _import_hvac()
        if sum(source is not None for source in (token, approle, token_file)) > 1:
            raise ConfigurationError("give one of token=, approle= or token_file=, not several")
        self._approle = approle
        self._token = Secret("")
        self._token_path: Path | None = None  # re-read when the engine rejects the token
        if approle is not None:
            self.auth_source = f"AppRole at auth/{approle.mount}"
        elif token is not None:
            self._token = Secret(token)
            self.auth_source = "token argument"
        elif token_file is not None:
            self._token_path = Path(token_file)
            self._token = _read_token_file(self._token_path)
            self.auth_source = f"token file {str(token_file)!r}"
        else:
            self._token, self.auth_source, self._approle, self._token_path = (
                _token_from_environment()
            )
        if self._approle is None and not self._token.reveal().strip():
            raise ConfigurationError(f"the Vault token from the {self.auth_source} is empty")
        ca_source = "verify=, or ca= in a registry URL"
        if verify is None:
            cacert = _env_first(CACERT_ENV_VARS)
            verify = cacert[1] if cacert is not None else True
            ca_source = f"the {cacert[0]} environment variable" if cacert is not None else ""
        if isinstance(verify, str) and not os.path.exists(verify):
            # requests would report this only at the first request, as if the
            # engine were unreachable: say what is wrong, now.
            raise ConfigurationError(
                f"the Vault CA bundle {verify!r} (from {ca_source}) does not exist"
            )
        if namespace is None:
            found = _env_first(NAMESPACE_ENV_VARS)
            namespace = found[1] if found is not None else None
        self._hvac = hvac
        # An explicit token ("" until an AppRole logs in) stops hvac reading
        # VAULT_TOKEN or ~/.vault-token on its own, behind the order above.
        self._client = hvac.Client(
            url=self.url,
            token=self._token.reveal() if self._approle is None else "",
            namespace=namespace or None,
            verify=verify,
            timeout=timeout,
        )
        self._lock = threading.RLock()
        self._checked = False  # token TTL looked up (or an AppRole login done)
        self._renew_at: float | None = None  # monotonic; None: never (no TTL, or unknown)
        self._expires_at: float | None = None
        self.request_count = 0
        """Requests sent to the engine (for tests and metrics; renewals included)."""

    def __repr__(self) -> str:
        return f"<VaultConnection {self.url} auth={self.auth_source}>"

    def __reduce__(self) -> str:
        raise TypeError("VaultConnection cannot be pickled")

    @property
    def where(self) -> str:
        """How messages name the engine."""
        return f"Vault/OpenBao at {self.url}"

    # -- requests ------------------------------------------------------------------

    def call(self, fn: Callable[[Any], T], *, action: str, path: str, capability: str) -> T:
        """Run ``fn(hvac_client)``; map any failure to a :class:`VaultError`.

        *action* completes "cannot ..."; *path* is the policy path the request
        needs (``kv/data/app/index``) and *capability* what a policy must grant on it.
        """
        for attempt in (1, 2):
            self._ensure_token()
            try:
                with self._lock:
                    self.request_count += 1
                return fn(self._client)
            except Exception as exc:
                token_valid = True
                if isinstance(exc, self._hvac.exceptions.Forbidden):
                    token_valid = self._token_valid()
                    if not token_valid and attempt == 1 and self._renew_credentials():
                        continue
                raise self._error(exc, action, path, capability, token_valid) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def call_or_none(
        self, fn: Callable[[Any], T], *, action: str, path: str, capability: str
    ) -> T | None:
        """Like :meth:`call`, but ``None`` when the engine answers 404 (nothing there)."""
        try:
            return self.call(fn, action=action, path=path, capability=capability)
        except VaultError as exc:
            if exc.reason == "missing":
                return None
            raise

    def close(self) -> None:
        """Close the HTTP connections (the token is not revoked: others may share it)."""
        adapter = getattr(self._client, "adapter", None)
        if adapter is not None:
            adapter.close()

    # -- token lifecycle -------------------------------------------------------------

    def _ensure_token(self) -> None:
        if self._checked and (self._renew_at is None or time.monotonic() < self._renew_at):
            return  # the common case: no lock, no request
        with self._lock:
            if not self._checked:
                if self._approle is not None:
                    self._login()
                else:
                    self._checked = self._lookup()
            elif self._renew_at is not None and time.monotonic() >= self._renew_at:
                self._renew()

    def _set_ttl(self, ttl: float, renewable: bool) -> None:
        now = time.monotonic()
        if ttl <= 0:
            self._renew_at = self._expires_at = None  # a token without expiry (root)
            return
        self._expires_at = now + ttl
        self._renew_at = now + ttl * _RENEW_FRACTION
        if not renewable and self._approle is None:
            self._renew_at = None  # nothing we can do; the engine will say when it expires

    def _lookup(self) -> bool:
        """Learn the token's TTL; whether that question is settled."""
        try:
            self.request_count += 1
            data = self._client.auth.token.lookup_self()["data"]
        except self._hvac.exceptions.Forbidden:
            # A bad token, or no access to lookup-self (a policy without "default"):
            # the request we are about to send says which, naming its path.
            return True
        except Exception:
            return False  # sealed, unreachable, ...: the request reports it; ask again later
        self._set_ttl(float(data.get("ttl") or 0), bool(data.get("renewable")))
        return True

    def _login(self) -> None:
        approle = self._approle
        assert approle is not None
        path = f"auth/{approle.mount}/login"
        try:
            self.request_count += 1
            auth = self._client.auth.approle.login(
                role_id=approle.role_id,
                secret_id=approle.secret_id.reveal(),
                mount_point=approle.mount,
                use_token=True,
            )["auth"]
        except self._hvac.exceptions.InvalidRequest:
            raise VaultError(
                f"{self.where} refused the AppRole login at {path}: invalid role id or "
                "secret id (expired, used up, or bound to other addresses)",
                reason="token",
                path=path,
            ) from None
        except Exception as exc:
            raise self._error(exc, "log in with AppRole", path, "update") from exc
        self._checked = True
        self._set_ttl(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
        logger.debug(
            "%s: logged in with AppRole at %s (token TTL %ss)",
            self.where,
            path,
            auth.get("lease_duration"),
        )

    def _renew(self) -> None:
        try:
            self.request_count += 1
            auth = self._client.auth.token.renew_self()["auth"]
        except Exception as exc:
            remaining = (self._expires_at or 0.0) - time.monotonic()
            if not isinstance(exc, self._hvac.exceptions.Forbidden) and remaining > 2:
                # Sealed or unreachable: the token still works; try again a bit later
                # (the request itself reports the outage).
                self._renew_at = time.monotonic() + min(5.0, remaining / 2)
                return
            if self._approle is not None:
                logger.info("%s: token renewal failed; logging in with AppRole again", self.where)
                self._login()
                return
            logger.warning(
                "%s: cannot renew the Vault token (%s); it expires in %.0fs",
                self.where,
                type(exc).__name__,
                max(0.0, (self._expires_at or 0.0) - time.monotonic()),
            )
            self._renew_at = None
            return
        ttl = float(auth.get("lease_duration") or 0)
        remaining = (self._expires_at or 0.0) - time.monotonic()
        if ttl <= remaining + 1:
            # The renewal hit the token's max TTL and extended nothing.
            if self._approle is not None:
                self._login()
                return
            logger.warning(
                "%s: the Vault token reached its max TTL; it expires in %.0fs", self.where, ttl
            )
            self._set_ttl(ttl, False)
            self._renew_at = None
            return
        self._set_ttl(ttl, bool(auth.get("renewable")))
        logger.debug("%s: renewed the token (TTL %.0fs)", self.where, ttl)

    def _renew_credentials(self) -> bool:
        """After the engine rejected our token: get a fresh one if we can (log in
        with the AppRole again, or re-read a token file an agent rewrites)."""
        with self._lock:
            if self._approle is not None:
                logger.info("%s: the AppRole token was rejected; logging in again", self.where)
                self._login()
                return True
            if self._token_path is not None:
                try:
                    fresh = _read_token_file(self._token_path)
                except ConfigurationError:
                    return False
                if fresh.reveal().strip() and fresh != self._token:
                    logger.info("%s: token rejected; using the token file's new token", self.where)
                    self._token = fresh
                    self._client.token = fresh.reveal()
                    self._checked = False  # look its TTL up
                    return True
        return False

    def _token_valid(self) -> bool:
        """Whether the engine still accepts our token (after a 403, to tell why)."""
        try:
            self.request_count += 1
            self._client.auth.token.lookup_self()
        except self._hvac.exceptions.Forbidden:
            return False
        except Exception:
            return True  # cannot tell; report the original error
        return True

    # -- errors ------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """Engine error text, without our credentials should the engine ever echo them."""
        for value in (self._token.reveal(), str(self._client.token or "")):
            if value:
                text = text.replace(value, "[token]")
        if self._approle is not None:
            text = text.replace(self._approle.secret_id.reveal(), "[secret id]")
        text = " ".join(text.split())
        return text[:300]

    def _error(
        self,
        exc: BaseException,
        action: str,
        path: str,
        capability: str,
        token_valid: bool = True,
    ) -> VaultError:
        exceptions = self._hvac.exceptions
        where = self.where
        tls = find_ssl_error(exc) if isinstance(exc, OSError) else None
        if tls is not None:
            # Before the OSError branch: requests' SSLError is a ConnectionError, but
            # the engine was reached; its certificate (or our CA bundle) is the problem.
            if isinstance(tls, ssl.SSLCertVerificationError):
                why = tls.verify_message or tls.reason or "failed"
                problem = f"TLS certificate verification failed for {where} ({why})"
            else:
                problem = f"TLS with {where} failed ({tls.reason or type(tls).__name__})"
            return VaultError(
                f"cannot {action}: {self._scrub(problem)}; if the engine's certificate is "
                "signed by a private CA, give that CA's certificate (ca= in the vault+https "
                "URL, verify=, or VAULT_CACERT / BAO_CACERT)",
                reason="network",
                path=path,
            )
        if isinstance(exc, OSError):
            # requests' ConnectionError and Timeout derive from OSError.
            kind = "timed out" if "timeout" in type(exc).__name__.lower() else "unreachable"
            return VaultError(
                f"cannot {action}: {where} is {kind} (network: {type(exc).__name__})",
                reason="network",
                path=path,
            )
        if not isinstance(exc, exceptions.VaultError):
            return VaultError(
                f"cannot {action}: unexpected {type(exc).__name__} talking to {where}", path=path
            )
        detail = self._scrub(", ".join(str(e) for e in exc.errors or []) or str(exc.args[0] or ""))
        if isinstance(exc, exceptions.VaultDown):
            if "sealed" in detail.lower():
                return VaultError(
                    f"cannot {action}: {where} is sealed; an operator must unseal it "
                    "(bao operator unseal / vault operator unseal)",
                    reason="sealed",
                    path=path,
                )
            return VaultError(
                f"cannot {action}: {where} is unavailable (503: {detail})",
                reason="network",
                path=path,
            )
        if isinstance(exc, exceptions.Forbidden):
            if not token_valid:
                return VaultError(
                    f"cannot {action}: {where} rejected the token from the {self.auth_source} "
                    "(403: invalid, expired or revoked)",
                    reason="token",
                    path=path,
                )
            return VaultError(
                f"cannot {action}: {where} denied access (403 permission denied) to "
                f"{path!r}; the token's policy must grant {capability!r} on that path",
                reason="forbidden",
                path=path,
            )
        if isinstance(exc, exceptions.InvalidPath):
            return VaultError(
                f"cannot {action}: {where} has nothing at {path!r} (404); is the engine "
                "mounted there?",
                reason="missing",
                path=path,
            )
        if isinstance(exc, exceptions.InvalidRequest) and "check-and-set" in detail:
            return VaultError(
                f"cannot {action}: {path!r} changed concurrently (check-and-set)",
                reason="conflict",
                path=path,
            )
        if isinstance(exc, exceptions.InvalidRequest):
            return VaultError(
                f"cannot {action}: {where} refused the request on {path!r} (400: {detail})",
                reason="invalid",
                path=path,
            )
        return VaultError(
            f"cannot {action}: {where} failed on {path!r} ({type(exc).__name__}: {detail})",
            path=path,
        )


def _read_token_file(path: Path) -> Secret:
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(f"Vault token file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read Vault token file {str(path)!r}: {exc.strerror}"
        ) from None
    return Secret(text)


def _token_from_environment() -> tuple[Secret, str, AppRole | None, Path | None]:
    found = _env_first(TOKEN_ENV_VARS)
    if found is not None:
        return Secret(found[1]), f"{found[0]} environment variable", None, None
    approle = AppRole.from_env()
    if approle is not None:
        source = f"AppRole at auth/{approle.mount} (from the environment)"
        return Secret(""), source, approle, None
    default = Path.home() / ".vault-token"
    if default.is_file():
        return _read_token_file(default), f"token file {str(default)!r}", None, default
    raise ConfigurationError(
        "no Vault credentials: give the VaultConnection token=, approle= or token_file=, "
        "or set VAULT_TOKEN (or BAO_TOKEN), "
        "or VAULT_ROLE_ID and VAULT_SECRET_ID, or log in so ~/.vault-token exists"
    )


def check_loose_options(url: str | VaultConnection, options: Mapping[str, Any]) -> None:
    """Check connection settings a caller passed beside *url*, not on a connection.

    Deprecated (for one release): beside an address they still build the connection,
    with a :class:`DeprecationWarning`. Beside a :class:`VaultConnection` they would
    be ignored, so they are refused. Messages name the keywords, never their values.
    """
    if options:
        names = ", ".join(f"{name}=" for name in options)
        if isinstance(url, VaultConnection):
            raise ConfigurationError(
                f"{names} would be ignored beside a VaultConnection: set them on the connection"
            )
        _warn_deprecated(
            f"passing {names} beside a Vault address is deprecated and will be removed in "
            f"the next release: pass VaultConnection(url, {names}...) instead"
        )


def _warn_deprecated(message: str) -> None:
    """A DeprecationWarning attributed to the first caller outside this package, so
    the default filters show it to the code that has to change."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, DeprecationWarning, stacklevel=level)
