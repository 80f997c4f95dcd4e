"""vLLM-Omni's video jobs: the stored ``VideoResponse`` and its life on the simulator's clock.

A job is ``queued`` for one step (``seconds_per_step``), ``in_progress`` for two, then
``completed``. ``progress`` stays 0 until it jumps to 100. Two kinds of failure, both kept as
the job's ``error`` with an int ``code`` and answered on retrieve with that HTTP status:

* an engine failure (a prompt holding :data:`~sora_proxy.simulator.views.FAIL_MARKER`): the job
  runs a step, then fails with 500;
* a model rejection (a prompt holding :data:`REJECT_MARKER`, or a ``num_frames`` other than the
  server's ``required_num_frames``): the check runs before the scheduler takes the job, so it
  goes from ``queued`` straight to ``failed`` with 400 "This diffusion model requires N frames;
  got M.".

On completion ``num_frames``, ``fps`` and ``duration_s`` become what Wan2.2 produced: it makes
``4k+1`` frames (81 when none were asked for), so ``seconds=4`` at 24 fps asks 96 and gets 97.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..views import FAIL_MARKER
from .form import VideoRequest

#: Put this in a prompt to have the model reject the job (HTTP 400 on retrieve).
REJECT_MARKER = "[sim:reject]"
#: Frames Wan2.2 makes when the request names neither ``num_frames`` nor ``seconds``.
DEFAULT_NUM_FRAMES = 81
#: The frame count the rejection message demands when the server does not require one.
REJECTION_FRAMES = 121

_ENGINE_FAILURE = "Simulated diffusion engine failure (EngineGenerateError)."


def new_job(request: VideoRequest, model: str, required_num_frames: int | None) -> dict[str, Any]:
    """Build the stored job for ``request``, keys in ``VideoResponse`` order.

    Keys starting with ``_`` are the simulator's own: ``_started`` (when its clock started),
    ``_failure`` (``(status, message, steps)`` when and how it fails) and ``_produced``
    (``(num_frames, fps)`` the model makes).
    """
    asked = request.num_frames
    job: dict[str, Any] = {
        "id": f"video_gen_{secrets.token_hex(16)}",
        "object": "video",
        "model": model,
        "prompt": request.prompt,
        "status": "queued",
        "size": request.get("size"),
        "progress": 0,
        "seconds": request.get("seconds") or "4",
        "quality": request.get("quality") or "default",
        "created_at": int(time.time()),
        "completed_at": None,
        "remixed_from_video_id": None,
        "error": None,
        "media_type": "video/mp4",
        "expires_at": None,
        "file_name": None,
        "inference_time_s": None,
        "fps": request.fps,
        "num_frames": asked,
        "duration_s": request.duration_s,
        "metrics": None,
        "stage_durations": {},
        "peak_memory_mb": 0.0,
        "action": None,
        "_started": time.time(),
        "_failure": failure_of(request, required_num_frames),
        "_produced": (wan_frames(asked), request.fps),
    }
    return job


def failure_of(
    request: VideoRequest, required_num_frames: int | None
) -> tuple[int, str, int] | None:
    """How ``request`` fails, as ``(status, message, steps)``, or ``None`` if it succeeds."""
    frames = request.num_frames or DEFAULT_NUM_FRAMES
    given = request.get("num_frames")
    refused = required_num_frames is not None and given is not None and given != required_num_frames
    if refused or REJECT_MARKER in request.prompt:
        required = required_num_frames or REJECTION_FRAMES
        return 400, f"This diffusion model requires {required} frames; got {frames}.", 1
    if FAIL_MARKER in request.prompt:
        return 500, _ENGINE_FAILURE, 2
    return None


def wan_frames(asked: int | None) -> int:
    """The frames Wan2.2 makes for ``asked``: rounded down to ``4k+1``, 81 when not asked."""
    if asked is None:
        return DEFAULT_NUM_FRAMES
    return asked if asked % 4 == 1 else asked // 4 * 4 + 1


def render(
    job: dict[str, Any], seconds_per_step: float, now: float | None = None
) -> dict[str, Any]:
    """The ``VideoResponse`` JSON of a stored ``job`` as of ``now``."""
    public = {key: value for key, value in job.items() if not key.startswith("_")}
    elapsed = (time.time() if now is None else now) - job["_started"]
    steps = elapsed / seconds_per_step if seconds_per_step > 0 else float("inf")
    failure: tuple[int, str, int] | None = job["_failure"]
    if failure is not None and steps >= failure[2]:
        status, message, at = failure
        public.update(status="failed", error={"code": status, "message": message})
        public["completed_at"] = int(job["_started"] + at * seconds_per_step)
        public["inference_time_s"] = max(at - 1, 0) * seconds_per_step
    elif steps < 1:
        pass
    elif steps < 3:
        public["status"] = "in_progress"
    else:
        frames, fps = job["_produced"]
        public.update(status="completed", progress=100, file_name=f"{job['id']}.mp4")
        public["completed_at"] = int(job["_started"] + 3 * seconds_per_step)
        public["inference_time_s"] = 2 * seconds_per_step
        public.update(fps=fps, num_frames=frames, duration_s=frames / fps)
    return public
