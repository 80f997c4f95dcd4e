"""A local OpenAI-format video upstream: ``make serve`` relays to it, the tests record with it.

It speaks the whole Videos API of ``UPSTREAM.md`` under ``/v1`` (create, list, retrieve,
delete, content, remix, edits, extensions, characters) and is as strict as the real upstream
about request bodies. Every request is recorded raw in ``app.extensions["sora_simulator"]``
(a :class:`SimulatorState`) before Flask parses it, and failures can be armed there::

    with SimulatorServer(seconds_per_step=0.05) as sim:
        sim.state.fail_next.append(FailureSpec(method="POST", status=500))
        requests.post(f"{sim.base_url}/videos", ...)   # answered 500, yet recorded
        assert sim.state.requests[-1].files["input_reference"][0].data == png_bytes

For streaming tests, ``sim.state.add_large_video(300 << 20, seed=1)`` adds a completed video
whose content is generated on the fly; :func:`large_body_sha256` and :func:`large_body_chunks`
give the expected digest and bytes, and ``sim.state.content_streams`` shows each download's
progress and whether its client went away (:class:`StreamRecord`).
"""

from __future__ import annotations

from .app import create_simulator_app
from .large import large_body_chunks, large_body_sha256
from .server import SimulatorServer, main
from .state import FailureSpec, RecordedFile, RecordedRequest, SimulatorState, StreamRecord
from .views import FAIL_MARKER

__all__ = [
    "FAIL_MARKER",
    "FailureSpec",
    "RecordedFile",
    "RecordedRequest",
    "SimulatorServer",
    "SimulatorState",
    "StreamRecord",
    "create_simulator_app",
    "large_body_chunks",
    "large_body_sha256",
    "main",
]
