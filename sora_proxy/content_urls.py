"""Short-lived signed content URLs: a video's bytes in a ``<video src>`` or ``<img src>``.

A media element cannot send an ``Authorization`` header, so the caller asks
``POST {prefix}/v1/videos/{id}/content_url`` for a URL that carries its own proof::

    {external base}{prefix}/v1/videos/{id}/content?variant=thumbnail&token=...

The token is an itsdangerous ``URLSafeSerializer`` signature (HMAC-SHA256, salt
``sora_proxy.content_url``) over ``{"v": video id, "c": caller, "var": variant, "exp": unix
seconds}``. The key is ``SORA_PROXY_SIGNING_KEY``, else the Flask app's ``SECRET_KEY`` (with
its ``SECRET_KEY_FALLBACKS``, so rotating the app's key keeps URLs already handed out working
until they expire). The salt keeps these tokens apart from anything else the app signs with
the same key (its session cookie).

A token is signed, not encrypted: whoever holds the URL can read the video id, the caller's
name, the variant and the expiry, and can fetch that one variant until then. It grants
nothing else: a download with a token is answered as the named caller's own download would
be, so ownership is checked again (a deleted video is a 404 at once).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any

from flask import current_app, url_for
from itsdangerous import BadData, URLSafeSerializer

from .archiving import VARIANTS
from .auth import Caller
from .catalog import Upstream
from .errors import Conflict, Forbidden, InvalidRequest, ServiceUnavailable
from .extension import proxy_state
from .settings import Settings
from .store import OwnedResource

SALT = "sora_proxy.content_url"


def read_request(body: Mapping[str, Any], settings: Settings) -> tuple[str, float]:
    """The ``variant`` and ``expires_in`` (seconds) a ``content_url`` body asks for, with
    their defaults (``video``, ``SORA_PROXY_CONTENT_URL_TTL``).

    :raises InvalidRequest: an unknown variant, or a life that is not a positive number of
        seconds up to ``SORA_PROXY_CONTENT_URL_MAX_TTL``.
    """
    variant = body.get("variant", "video")
    if variant not in VARIANTS:
        raise InvalidRequest(
            "Invalid 'variant': Must be video, thumbnail or spritesheet.", param="variant"
        )
    expires_in = body.get("expires_in", settings.content_url_ttl)
    longest = settings.content_url_max_ttl
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int | float)
        or not 0 < expires_in <= longest
    ):
        raise InvalidRequest(
            f"Invalid 'expires_in': Must be a number of seconds above 0 and at most {longest:g}.",
            param="expires_in",
        )
    return variant, float(expires_in)


def require_signable(
    caller: Caller, video_id: str, record: OwnedResource | None, upstream: Upstream
) -> None:
    """Refuse a URL that could not be fetched as the caller could fetch the content now.

    :raises ServiceUnavailable: the upstream takes each caller's own key (pass-through): the
        proxy could not fetch the bytes for a request that brings none.
    :raises Conflict: ``video_not_ready`` when the proxy knows the video is not completed
        (as ``/content`` itself answers). Without a store the proxy knows no status, and the
        download relays whatever the upstream says.
    """
    if upstream.api_key is None and caller.upstream_authorization is not None:
        raise ServiceUnavailable(
            "Signed content URLs need the proxy to hold the upstream's key "
            "(SORA_PROXY_UPSTREAM_API_KEY); in pass-through mode the upstream checks each "
            "caller's own key, which a URL cannot carry.",
            code="content_urls_unavailable",
            headers={"x-should-retry": "false"},
        )
    status = (record.last_object or {}).get("status") if record is not None else None
    if status is not None and status != "completed":
        raise Conflict(
            f"Video '{video_id}' is not ready: its status is {status}.",
            param="video_id",
            code="video_not_ready",
        )


def mint(caller: Caller, video_id: str, variant: str, expires_in: float) -> dict[str, Any]:
    """The ``video.content_url`` object: a URL to ``variant`` of ``video_id`` that works with
    no header for ``expires_in`` seconds (rounded up to a whole second).

    The URL is built by ``url_for`` from this request, so the host, scheme and mount point are
    those the caller used (X-Forwarded-* count where ProxyFix trusts them).

    :raises ServiceUnavailable: no key to sign with.
    """
    expires_at = math.ceil(time.time() + expires_in)
    payload = {"v": video_id, "c": caller.name, "var": variant, "exp": expires_at}
    token = _serializer().dumps(payload)
    query = {"variant": variant} if variant != "video" else {}
    # The token last: the variant stays readable at the front, and it is all one can cut.
    url = url_for(".video_content", video_id=video_id, **query, token=token, _external=True)
    return {
        "object": "video.content_url",
        "id": video_id,
        "variant": variant,
        "url": url,
        "expires_at": expires_at,
    }


def token_caller(token: str, video_id: str, variant: str) -> Caller:
    """The caller a content URL's ``token`` names, if it is valid for ``variant`` of
    ``video_id`` now.

    :raises Forbidden: ``invalid_content_url`` (bad signature, another video or variant, a
        malformed payload) or ``content_url_expired``.
    :raises ServiceUnavailable: no key to check it with.
    """
    serializer = _serializer()
    invalid = Forbidden(
        "This content URL is not valid for this video. Ask for a new one with "
        "POST /v1/videos/{video_id}/content_url.",
        param="token",
        code="invalid_content_url",
    )
    try:
        payload = serializer.loads(token)
    except BadData:
        raise invalid from None
    if not isinstance(payload, dict):
        raise invalid
    name, expires_at = payload.get("c"), payload.get("exp")
    if (
        payload.get("v") != video_id
        or payload.get("var") != variant
        or not isinstance(name, str | None)
        or isinstance(expires_at, bool)
        or not isinstance(expires_at, int)
    ):
        raise invalid
    if time.time() >= expires_at:
        raise Forbidden(
            "This content URL has expired. Ask for a new one with "
            "POST /v1/videos/{video_id}/content_url.",
            param="token",
            code="content_url_expired",
        )
    return Caller(name)


def _serializer() -> URLSafeSerializer:
    settings_key = proxy_state().settings.signing_key
    keys: list[str | bytes]
    if settings_key:
        keys = [settings_key]
    elif current_app.secret_key:
        # itsdangerous signs with the last key and accepts any of them.
        fallbacks = current_app.config.get("SECRET_KEY_FALLBACKS") or ()
        keys = [*fallbacks, current_app.secret_key]
    else:
        # 503, not 409: nothing about this request or video conflicts with anything; the
        # deployment lacks a key, which only its operator can add (and a 5xx shows on their
        # error-rate dashboards). x-should-retry stops SDK retries that cannot succeed.
        raise ServiceUnavailable(
            "Signed content URLs need a signing key: set SORA_PROXY_SIGNING_KEY, or the Flask "
            "app's SECRET_KEY.",
            code="signing_key_missing",
            headers={"x-should-retry": "false"},
        )
    # All bytes: itsdangerous's types take a list of one kind, not of both.
    secrets = [key.encode() if isinstance(key, str) else key for key in keys]
    return URLSafeSerializer(secrets, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})
