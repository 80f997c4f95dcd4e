"""A simulator of xAI's REST video API (``https://api.x.ai/v1/videos/...``).

It follows ``shared/dialects/xai.md``: ``POST /v1/videos/generations`` takes JSON (``duration``
an integer 1..15, a string is a 422) and answers only ``{"request_id": "<uuid>"}``;
``GET /v1/videos/{request_id}`` answers 200 with ``pending`` (``progress`` rising) for three
steps, then ``done`` with ``video: {url, duration, respect_moderation}``, ``model`` and
``usage.cost_in_usd_ticks``. ``video.url`` is a public temporary link: on the result host when
``result_base_url`` is given (``gateways/results.py``), else on this app's own
``/xai-vidgen-bucket/``; it needs no key. Errors are ``{"code": <gRPC status text>, "error":
<message>}``, and a wrong (or missing) key is a **400**::

    app = create_xai_app(api_key="xai-k", seconds_per_step=0.05)
    with SimulatorServer(app=app) as sim:
        requests.post(f"{sim.base_url}/videos/generations", json={...}, headers=...)

Outcomes on demand, by prompt markers: :data:`FAIL_MARKER` ends ``failed`` (``internal_error``),
:data:`MODERATED_MARKER` ends ``done`` with ``respect_moderation: false`` and no URL,
:data:`EXPIRE_MARKER` ends ``expired``, :data:`NO_STATUS_MARKER` makes every pending answer
``{"request_id"}`` only (as seen through a reseller), :data:`NO_CREDITS_MARKER` is refused at
create with 429 ``{"code": 429, "error": "You ran out of credits."}``.
"""

from __future__ import annotations

from ..views import FAIL_MARKER
from .app import create_xai_app
from .jobs import EXPIRE_MARKER, MODELS, MODERATED_MARKER, NO_CREDITS_MARKER, NO_STATUS_MARKER

__all__ = [
    "EXPIRE_MARKER",
    "FAIL_MARKER",
    "MODELS",
    "MODERATED_MARKER",
    "NO_CREDITS_MARKER",
    "NO_STATUS_MARKER",
    "create_xai_app",
]
