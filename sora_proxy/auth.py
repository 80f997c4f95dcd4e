"""Who is calling: the caller's own upstream key, a configured proxy key, or the host app.

Three modes, decided by the settings:

* **pass-through** (no upstream key): the caller's ``Authorization`` goes upstream unchanged;
  the upstream decides.
* **keys** (``SORA_PROXY_API_KEYS``, ``SORA_PROXY_API_KEYS_FILE``): the caller must present one
  of the configured keys as a bearer token; it is compared in constant time, never sent
  upstream, and maps to the caller's name.
* **host app**: ``SoraProxy(app, authenticate=fn)`` where ``fn(request)`` returns a caller id
  or ``None``; the host's own login decides.

An upstream key with neither keys nor a callback is refused at start-up unless
``SORA_PROXY_ALLOW_ANONYMOUS`` is set (see :mod:`sora_proxy.settings`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from flask import Request

from .errors import Unauthorized
from .settings import Settings

#: A host app's authentication callback: the caller's id, or ``None`` to refuse.
AuthenticateCallback = Callable[[Request], "str | None"]


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request.

    :param name: a stable id for the caller (``None`` when anonymous or pass-through).
    :param upstream_authorization: the ``Authorization`` value to forward upstream in
        pass-through mode, else ``None``.
    """

    name: str | None
    upstream_authorization: str | None = None

    def __repr__(self) -> str:
        return f"Caller(name={self.name!r})"

    @property
    def owner(self) -> str:
        """The name records are kept under (``anonymous`` when a store only routes by id)."""
        return self.name or "anonymous"


class Authenticator:
    """Decides who is calling, per the configured mode."""

    def __init__(self, settings: Settings, callback: AuthenticateCallback | None = None) -> None:
        self._callback = callback
        self._pass_through = settings.upstream_api_key is None
        # Keys are kept only as digests: comparing them costs the same whatever their length,
        # and nothing in memory dumps or reprs holds a usable key.
        self._keys = tuple((_digest(key), name) for name, key in settings.api_keys)

    @property
    def identifies_callers(self) -> bool:
        """True when each request has a named caller (keys or host-app mode): the modes in
        which the proxy keeps ownership and idempotency records."""
        return self._callback is not None or bool(self._keys)

    def authenticate(self, request: Request) -> Caller:
        """The caller of ``request``.

        :raises Unauthorized: a required key is missing or wrong, or the callback refused.
        """
        if self._callback is not None:
            name = self._callback(request)
            if not name:
                raise Unauthorized("Authentication required.", code="unauthenticated")
            return Caller(str(name))
        if self._keys:
            presented = _bearer_token(request.headers.get("Authorization"))
            if presented is None:
                raise Unauthorized(
                    "You didn't provide an API key. Provide it as 'Authorization: Bearer <key>'."
                )
            digest = _digest(presented)
            matched = None
            # Every key is compared, so the time taken does not tell which one matched.
            for candidate, name in self._keys:
                if hmac.compare_digest(digest, candidate):
                    matched = name
            if matched is None:
                raise Unauthorized("Incorrect API key provided.")
            return Caller(matched)
        if self._pass_through:
            return Caller(None, request.headers.get("Authorization"))
        return Caller(None)


def _bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()
