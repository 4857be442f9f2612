"""``SecureAdapter``: the transport adapter a :class:`SecureSession` mounts."""

from __future__ import annotations

from typing import Final

from requests.adapters import HTTPAdapter

__all__ = ["SecureAdapter"]

# requests keeps 10 pools and silently evicts the rest; a gateway client talks to
# many services, each with its own pool, so keep room for them.
DEFAULT_POOL_CONNECTIONS: Final = 128
DEFAULT_POOL_MAXSIZE: Final = 32


class SecureAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` sized for many services.

    Credentials are injected by the session before the adapter runs, so mocking
    libraries that replace the adapter (``responses``, ``requests-mock``) still see
    them.
    """

    def __init__(
        self,
        pool_connections: int = DEFAULT_POOL_CONNECTIONS,
        pool_maxsize: int = DEFAULT_POOL_MAXSIZE,
        max_retries: int = 0,
        pool_block: bool = False,
    ) -> None:
        super().__init__(
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            max_retries=max_retries,
            pool_block=pool_block,
        )
