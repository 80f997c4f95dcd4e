"""A simulator of OpenRouter's video API (``https://openrouter.ai/api/v1/videos``).

It follows ``shared/dialects/openrouter.md``: ``POST /api/v1/videos`` takes JSON only
(``duration`` an integer in the model's ``supported_durations``, the size as ``size`` or
``resolution`` + ``aspect_ratio``, reference images as ``frame_images``) and answers **202**
``{id: "gen-vid-<unix>-<20 alnum>", polling_url: "/api/v1/videos/<id>" (relative), status:
"pending"}``. ``GET /api/v1/videos/{id}`` reads ``pending``, ``in_progress``, then
``completed`` with ``generation_id``, ``unsigned_urls`` (this API's ``/content?index=0``, key
needed), signed ``urls`` + ``expires_at`` (no key: on the storage host when
``storage_base_url`` is given, else this app's own ``/_storage/``) and ``usage: {cost,
is_byok}``; a failure's ``error`` is a string. ``GET /api/v1/videos/models`` lists
:data:`MODELS` (no key needed). Errors are ``{"error": {"code": <int>, "message", "metadata"}}``;
more than five polls a second per key are a 429 with ``Retry-After: 1``::

    app = create_openrouter_app(api_key="sk-or-k", seconds_per_step=0.05)
    with SimulatorServer(app=app) as sim:
        api = sim.base_url.removesuffix("/v1") + "/api/v1"

Outcomes on demand, by prompt markers: :data:`FAIL_MARKER` ends ``failed``,
:data:`MODERATED_MARKER` ``failed`` with a moderation message, :data:`CANCEL_MARKER`
``cancelled``, :data:`EXPIRE_MARKER` ``completed`` then ``expired`` one step later (content
410), :data:`NO_STORED_COPY_MARKER` completes without ``urls``, :data:`RATE_LIMIT_MARKER`
makes the first poll a 429 with ``Retry-After``, :data:`NO_CREDITS_MARKER` is a 402 at create.
"""

from __future__ import annotations

from ..views import FAIL_MARKER
from .app import API_PREFIX, create_openrouter_app
from .jobs import (
    CANCEL_MARKER,
    EXPIRE_MARKER,
    MODELS,
    MODERATED_MARKER,
    NO_CREDITS_MARKER,
    NO_STORED_COPY_MARKER,
    RATE_LIMIT_MARKER,
    RETRY_AFTER_SECONDS,
)

__all__ = [
    "API_PREFIX",
    "CANCEL_MARKER",
    "EXPIRE_MARKER",
    "FAIL_MARKER",
    "MODELS",
    "MODERATED_MARKER",
    "NO_CREDITS_MARKER",
    "NO_STORED_COPY_MARKER",
    "RATE_LIMIT_MARKER",
    "RETRY_AFTER_SECONDS",
    "create_openrouter_app",
]
