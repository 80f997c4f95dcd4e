"""A local OpenAI-format video upstream: ``make serve`` relays to it, the tests record with it.

It speaks the Videos API of ``UPSTREAM.md`` under ``/v1`` (create, list, retrieve, delete,
content, remix) and is as strict as the real upstream about the create body. Every request is
recorded raw in ``app.extensions["sora_simulator"]`` (a :class:`SimulatorState`) before Flask
parses it, and failures can be armed there::

    with SimulatorServer(seconds_per_step=0.05) as sim:
        sim.state.fail_next.append(FailureSpec(method="POST", status=500))
        requests.post(f"{sim.base_url}/videos", ...)   # answered 500, yet recorded
        assert sim.state.requests[-1].files["input_reference"][0].data == png_bytes
"""

from __future__ import annotations

from .app import create_simulator_app
from .server import SimulatorServer, main
from .state import FailureSpec, RecordedFile, RecordedRequest, SimulatorState
from .views import FAIL_MARKER

__all__ = [
    "FAIL_MARKER",
    "FailureSpec",
    "RecordedFile",
    "RecordedRequest",
    "SimulatorServer",
    "SimulatorState",
    "create_simulator_app",
    "main",
]
