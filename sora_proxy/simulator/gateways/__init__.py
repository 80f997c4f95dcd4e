"""Simulators of the OpenAI-format gateway families as upstreams (``openai-gateways.md``).

``create_gateway_app(style)`` builds one of them, ``create_result_host_app()`` the separate
host their signed result URLs point at; run each with :class:`~..server.SimulatorServer`::

    with SimulatorServer(app=create_result_host_app()) as host, SimulatorServer(
        app=create_gateway_app("new-api", api_key="sk-x", seconds_per_step=0.05,
                               result_base_url=host.base_url.removesuffix("/v1"))
    ) as gateway:
        ...

* ``"new-api"`` (:mod:`.newapi`): ``task_…`` ids, ``unknown`` before the first poll,
  ``{code, message, data}`` errors, ``metadata.url``, no delete/list/variant.
* ``"litellm"`` (:mod:`.litellm`): base64 ``video_…`` ids, ``usage``, 405 on DELETE, content
  always ``video/mp4`` (even a not-ready error JSON, answered 200).
* ``"reseller"`` (:mod:`.reseller`): 202 + ``polling_url``, ``cancelled``/``expired``,
  ``unsigned_urls``, 5 polls a second per key then 429 + ``Retry-After: 1``.

Every request is recorded raw in ``app.extensions["sora_simulator"]`` (a
:class:`~..state.SimulatorState`), where failures can be armed as for the OpenAI simulator.
Prompt markers: :data:`~..views.FAIL_MARKER` (``failed``, every style), :data:`CANCEL_MARKER`
and :data:`EXPIRE_MARKER` (reseller), :data:`GONE_MARKER` (new-api's content answers 502).
"""

from __future__ import annotations

from .app import STYLES, create_gateway_app
from .common import CANCEL_MARKER, EXPIRE_MARKER, GONE_MARKER
from .results import create_result_host_app

__all__ = [
    "CANCEL_MARKER",
    "EXPIRE_MARKER",
    "GONE_MARKER",
    "STYLES",
    "create_gateway_app",
    "create_result_host_app",
]
