"""httpcore network backends that check a TLS profile right after each handshake.

httpcore opens a connection in steps (``connect_tcp``, then ``start_tls`` on the
stream, through a proxy tunnel if there is one) and writes the first request byte
only once ``start_tls`` has returned. These backends wrap the stream of every new
connection so that, when ``start_tls`` completes with an entry's
:class:`~securesession._tls.ProfileContext`, the context's post-handshake checks run
there (server key pins first, then the legacy-version and CRL warnings): a pin
mismatch closes the connection and raises
:class:`~securesession.PinMismatchError` before httpcore writes anything.

Only the handshake goes through the wrapper: the stream ``start_tls`` returns for a
profile is the backend's own, so reads and writes pay nothing. (A ``start_tls`` with
another context, to an HTTPS proxy, returns a wrapped stream again: the tunnelled
handshake to the service comes next.)
"""

from __future__ import annotations

import ssl
from typing import Any

import httpcore

from .._tls import ProfileContext

__all__ = ["CheckingAsyncBackend", "CheckingBackend"]


class _Peer:
    """The TLS object of a stream, as ``ProfileContext.check_connection`` reads it.

    httpcore's sync stream hands out the C-level ``_ssl._SSLSocket``, whose
    ``getpeercert`` takes no keyword; anyio's an ``ssl.SSLObject``. Both answer this."""

    __slots__ = ("_tls",)

    def __init__(self, tls: Any) -> None:
        self._tls = tls

    def getpeercert(self, binary_form: bool = False) -> object:
        return self._tls.getpeercert(binary_form)

    def version(self) -> str | None:
        version: str | None = self._tls.version()
        return version


def _check(context: ProfileContext, stream: Any, host: str | None) -> None:
    context.check_connection(_Peer(stream.get_extra_info("ssl_object")), host or "")


class _CheckingStream(httpcore.NetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.start_tls(ssl_context, server_hostname, timeout)
        if not isinstance(ssl_context, ProfileContext):
            return _CheckingStream(stream)
        try:
            _check(ssl_context, stream, server_hostname)
        except BaseException:
            stream.close()
            raise
        return stream


class CheckingBackend(httpcore.NetworkBackend):
    """*inner* (httpcore's own backend), with profile checks after each handshake."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    # httpcore's connection arguments are passed on as they come: only the stream is
    # wrapped.

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _CheckingStream(self._inner.connect_tcp(*args, **kwargs))

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _CheckingStream(self._inner.connect_unix_socket(*args, **kwargs))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _CheckingAsyncStream(httpcore.AsyncNetworkStream):
    __slots__ = ("_inner",)

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        if not isinstance(ssl_context, ProfileContext):
            return _CheckingAsyncStream(stream)
        try:
            _check(ssl_context, stream, server_hostname)
        except BaseException:
            await stream.aclose()
            raise
        return stream


class CheckingAsyncBackend(httpcore.AsyncNetworkBackend):
    """The async twin of :class:`CheckingBackend`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _CheckingAsyncStream(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _CheckingAsyncStream(await self._inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
