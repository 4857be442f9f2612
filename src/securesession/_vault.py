"""Vault and OpenBao: one authenticated client, and the master key wrapped by Transit.

Both engines speak the same HTTP API, reached through ``hvac`` (the ``vault``
extra, imported on first use so nothing here needs it until a connection is made).

:class:`VaultConnection` is the one place that builds a client, so the KV registry
backend (:mod:`securesession._registry.vault`) and the Transit envelope below share
its behaviour:

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

Envelope encryption: the registry's 32-byte data key (a :class:`MasterKey`) is kept
only as Transit ciphertext (``vault:v<N>:...``, "the wrapped key"), in a file or a
setting. :func:`unwrap_key` (``MasterKey.from_vault_transit``) asks Transit to
decrypt it once per process and caches the result by the wrapped text, so the
engine is asked again only when that text changes, which is what :func:`rewrap_key`
does after the Transit key is rotated. The Transit key itself never leaves the engine.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from ._crypto import MasterKey
from ._exceptions import ConfigurationError, MasterKeyError, VaultError
from ._files import write_private_file
from ._secret import Secret
from ._tls import find_ssl_error

__all__ = [
    "AppRole",
    "VaultConnection",
    "clear_key_cache",
    "rewrap_key",
    "transit_key_version",
    "unwrap_key",
    "wrap_new_key",
]

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
_WRAPPED: Final = re.compile(r"vault:v(\d+):[A-Za-z0-9+/=]+")
_KEY_LEN: Final = 32


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


def _engine_url(url: str) -> str:
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

    Credentials are resolved as the module docstring describes; nothing is sent
    until the first request (an AppRole logs in then). Pass one connection to both
    :meth:`MasterKey.from_vault_transit` and the ``vault+https`` registry to share
    its login. ``verify`` is ``True``, ``False`` or a CA bundle path (default: the
    ``VAULT_CACERT`` / ``BAO_CACERT`` file if set). ``namespace`` defaults to
    ``VAULT_NAMESPACE`` / ``BAO_NAMESPACE``.
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
        self.url = _engine_url(url)
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
        "no Vault credentials: pass token= or approle=, or set VAULT_TOKEN (or BAO_TOKEN), "
        "or VAULT_ROLE_ID and VAULT_SECRET_ID, or log in so ~/.vault-token exists"
    )


def _connect(
    url: str | VaultConnection,
    *,
    token: str | Secret | None,
    approle: AppRole | None,
    token_file: str | os.PathLike[str] | None,
    namespace: str | None,
    verify: bool | str | None,
    timeout: float,
) -> VaultConnection:
    if isinstance(url, VaultConnection):
        if token is not None or approle is not None or token_file is not None:
            raise ConfigurationError("credentials go to the VaultConnection, not here")
        return url
    return VaultConnection(
        url,
        token=token,
        approle=approle,
        token_file=token_file,
        namespace=namespace,
        verify=verify,
        timeout=timeout,
    )


def _transit(
    url: str | VaultConnection,
    connect: dict[str, Any],
    operation: str,
    *,
    mount: str,
    key_name: str,
    data: dict[str, str],
    action: str,
) -> Any:
    """Run one Transit *operation* (encrypt, decrypt, rewrap) with key *key_name*;
    its response's ``data``. A connection built here from a URL is closed after it."""
    connection = _connect(url, **connect)
    try:
        response = connection.call(
            lambda client: getattr(client.secrets.transit, f"{operation}_data")(
                name=key_name, mount_point=mount, **data
            ),
            action=f"{action} with Transit key {key_name!r}",
            path=f"{mount}/{operation}/{key_name}",
            capability="update",
        )
    finally:
        if not isinstance(url, VaultConnection):
            connection.close()
    return response["data"]


# -- Transit envelope --------------------------------------------------------------------

_key_cache: dict[tuple[str, str, str, str], MasterKey] = {}
_key_cache_lock = threading.Lock()


def clear_key_cache() -> None:
    """Forget every unwrapped key, so the next :func:`unwrap_key` asks Transit again."""
    with _key_cache_lock:
        _key_cache.clear()


def transit_key_version(wrapped: str) -> int:
    """The Transit key version a wrapped key was encrypted under (``vault:v3:...`` is 3)."""
    match = _WRAPPED.fullmatch(wrapped.strip())
    if match is None:
        raise MasterKeyError("a wrapped key is Transit ciphertext of the form vault:v<N>:<base64>")
    return int(match[1])


def _read_wrapped(wrapped_key: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """The wrapped key text, and the file it came from (``None`` for a value)."""
    if isinstance(wrapped_key, str) and wrapped_key.strip().startswith("vault:v"):
        text, path = wrapped_key.strip(), None
    else:
        path = Path(wrapped_key)
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            raise MasterKeyError(
                f"wrapped key file {str(path)!r} does not exist (a wrapped key value "
                "starts with 'vault:v')"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not ASCII text"
            raise MasterKeyError(f"cannot read wrapped key file {str(path)!r}: {reason}") from None
    try:
        transit_key_version(text)
    except MasterKeyError as exc:
        where = "wrapped key" if path is None else f"wrapped key file {str(path)!r}"
        raise MasterKeyError(f"{where}: {exc}") from None
    return text, path


def _write_wrapped(path: Path, text: str, *, overwrite: bool) -> None:
    """Write *text* to *path* atomically (mode 0600: not a secret, but nobody else's business)."""
    write_private_file(
        path, text.encode("ascii") + b"\n", overwrite=overwrite, what="wrapped key file"
    )


def unwrap_key(
    url: str | VaultConnection,
    key_name: str,
    wrapped_key: str | os.PathLike[str],
    *,
    mount: str = "transit",
    token: str | Secret | None = None,
    approle: AppRole | None = None,
    token_file: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    verify: bool | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> MasterKey:
    """The data key that Transit key *key_name* wrapped (see ``MasterKey.from_vault_transit``).

    *wrapped_key* is the ciphertext (``vault:v1:...``) or a file holding it. The
    result is cached for the process by engine, mount, key name and wrapped text,
    so Transit is asked once, and again only for a new wrapped text (a rewrap
    under a new key version). The cache does not re-check the caller's credentials.
    """
    text, _ = _read_wrapped(wrapped_key)
    mount = mount.strip("/")
    engine = url.url if isinstance(url, VaultConnection) else _engine_url(url)
    slot = (engine, mount, key_name, text)
    with _key_cache_lock:
        cached = _key_cache.get(slot)
        if cached is not None:
            return cached
        connect = {
            "token": token,
            "approle": approle,
            "token_file": token_file,
            "namespace": namespace,
            "verify": verify,
            "timeout": timeout,
        }
        data = _transit(
            url,
            connect,
            "decrypt",
            mount=mount,
            key_name=key_name,
            data={"ciphertext": text},
            action="unwrap the master key",
        )
        try:
            raw = base64.b64decode(data["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise MasterKeyError(
                f"Transit key {key_name!r} returned no usable plaintext for the wrapped key"
            ) from None
        if len(raw) != _KEY_LEN:
            raise MasterKeyError(
                f"the wrapped key decrypts to {len(raw)} bytes, not a {_KEY_LEN}-byte master "
                "key: was it made by wrap_new_key?"
            )
        key = MasterKey(raw)
        _key_cache[slot] = key
    logger.info(
        "unwrapped master key id %s with Transit key %r version %d at %s",
        key.key_id,
        key_name,
        transit_key_version(text),
        engine,
    )
    return key


def wrap_new_key(
    url: str | VaultConnection,
    key_name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    mount: str = "transit",
    token: str | Secret | None = None,
    approle: AppRole | None = None,
    token_file: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    verify: bool | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[str, MasterKey]:
    """Generate a new master key and wrap it with Transit key *key_name*.

    Returns the wrapped text (safe to store anywhere: only Transit can unwrap it)
    and the key. With *path*, the wrapped text is also written there (atomically;
    an existing file is kept unless *overwrite*). Needs ``update`` on
    ``<mount>/encrypt/<key_name>``; the key must exist in Transit.
    """
    mount = mount.strip("/")
    connect = {
        "token": token,
        "approle": approle,
        "token_file": token_file,
        "namespace": namespace,
        "verify": verify,
        "timeout": timeout,
    }
    key = MasterKey.generate()
    raw = base64.urlsafe_b64decode(key.to_base64() + "=")
    data = _transit(
        url,
        connect,
        "encrypt",
        mount=mount,
        key_name=key_name,
        data={"plaintext": base64.b64encode(raw).decode("ascii")},
        action="wrap a new master key",
    )
    text = str(data["ciphertext"])
    transit_key_version(text)
    if path is not None:
        _write_wrapped(Path(path), text, overwrite=overwrite)
    engine = url.url if isinstance(url, VaultConnection) else _engine_url(url)
    with _key_cache_lock:
        _key_cache[(engine, mount, key_name, text)] = key
    logger.info("wrapped new master key id %s with Transit key %r", key.key_id, key_name)
    return text, key


def rewrap_key(
    url: str | VaultConnection,
    key_name: str,
    wrapped_key: str | os.PathLike[str],
    *,
    mount: str = "transit",
    token: str | Secret | None = None,
    approle: AppRole | None = None,
    token_file: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    verify: bool | str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """Re-encrypt a wrapped key under the newest version of Transit key *key_name*.

    The master key itself does not change, so no registry entry is re-encrypted;
    the engine never returns the plaintext. If *wrapped_key* is a file it is
    replaced atomically. Returns the new wrapped text. Needs ``update`` on
    ``<mount>/rewrap/<key_name>``. Run it after ``bao write -f
    transit/keys/<key_name>/rotate``; once every wrapped key is rewrapped, old
    versions can be retired with ``min_decryption_version``.
    """
    text, file = _read_wrapped(wrapped_key)
    mount = mount.strip("/")
    connect = {
        "token": token,
        "approle": approle,
        "token_file": token_file,
        "namespace": namespace,
        "verify": verify,
        "timeout": timeout,
    }
    data = _transit(
        url,
        connect,
        "rewrap",
        mount=mount,
        key_name=key_name,
        data={"ciphertext": text},
        action="rewrap the master key",
    )
    new_text = str(data["ciphertext"])
    old_version, new_version = transit_key_version(text), transit_key_version(new_text)
    if file is not None and new_text != text:
        _write_wrapped(file, new_text, overwrite=True)
    logger.info(
        "rewrapped master key from Transit key %r version %d to %d",
        key_name,
        old_version,
        new_version,
    )
    return new_text
