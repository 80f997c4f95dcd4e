"""A simulator of the Gemini Developer API's Veo models (``v1beta``, API key).

It follows ``shared/dialects/gemini.md`` as ``google-genai`` 2.34.0 sees it:
``POST /v1beta/models/{model}:predictLongRunning`` answers ``{"name":
"models/{model}/operations/{id}"}``; ``GET /v1beta/{name}`` answers the operation, with no
``done`` while it runs (two steps of ``seconds_per_step``) and ``done: true`` with
``response.generateVideoResponse.generatedSamples[].video.uri`` after three; the URI
(``https://generativelanguage.googleapis.com/v1beta/files/{id}:download?alt=media``, as Google
hands out) is downloaded from ``GET /v1beta/files/{id}:download?alt=media`` with the key. The key
goes in ``x-goog-api-key`` or ``?key=``; errors are Google's ``{"error": {code, message,
status, details}}``::

    app = create_gemini_app(api_key="k", seconds_per_step=0.05)
    with SimulatorServer(app=app) as sim:
        base = sim.base_url.removesuffix("/v1")  # the API lives under /v1beta
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=base))

Failures on demand, by prompt marker: :data:`FAIL_MARKER` (``"[sim:fail]"``) ends ``done``
with ``error {code: 13, message}`` after two steps; :data:`MODERATE_MARKER` ends ``done`` with
no samples and ``raiMediaFilteredCount: 1``; :data:`RATE_LIMIT_MARKER` makes the create a 429
``RESOURCE_EXHAUSTED`` carrying a ``google.rpc.RetryInfo`` delay.
"""

from __future__ import annotations

from ..views import FAIL_MARKER
from .app import create_gemini_app
from .models import MODELS, VeoModel
from .operations import MODERATE_MARKER, RATE_LIMIT_MARKER, RETRY_DELAY_SECONDS

__all__ = [
    "FAIL_MARKER",
    "MODELS",
    "MODERATE_MARKER",
    "RATE_LIMIT_MARKER",
    "RETRY_DELAY_SECONDS",
    "VeoModel",
    "create_gemini_app",
]
