"""A simulator of vLLM-Omni's OpenAI-compatible video server (``vllm serve <model> --omni``).

It follows ``shared/dialects/vllm-omni.md``: form-only create (a JSON body is a 400 with
``param: "body.prompt"``), ``model`` either omitted or the served name, jobs in memory that go
``queued`` -> ``in_progress`` -> ``completed`` with ``progress`` 0 then 100, a failed job
answered on retrieve with HTTP status = ``error.code`` (an int), ``/content`` that ignores
``variant``, no remix/edits/extensions/characters, vLLM's error envelope, and no auth unless an
API key is set (then a 401 ``{"error": "Unauthorized"}``)::

    app = create_vllm_omni_app(api_key="k", seconds_per_step=0.05)
    with SimulatorServer(app=app) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="k")
        video = client.videos.create_and_poll(prompt="a cat", poll_interval_ms=50)

Failures on demand: a prompt holding ``FAIL_MARKER`` (``"[sim:fail]"``) fails with 500, one
holding :data:`REJECT_MARKER` (``"[sim:reject]"``) is rejected by the model with 400, as is a
``num_frames`` other than ``required_num_frames`` when the app is built with one.
"""

from __future__ import annotations

from ..views import FAIL_MARKER
from .app import DEFAULT_SERVED_MODEL, create_vllm_omni_app
from .jobs import REJECT_MARKER

__all__ = ["DEFAULT_SERVED_MODEL", "FAIL_MARKER", "REJECT_MARKER", "create_vllm_omni_app"]
