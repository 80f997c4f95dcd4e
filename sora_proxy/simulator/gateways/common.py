"""What the three gateway simulators share: the job clock, prompt markers, bodies, keys, URLs.

A job is stored in :attr:`SimulatorState.videos` under its public id as a plain dict; keys
starting with ``_`` are internal: ``_started`` (its clock), ``_outcome`` (how it ends, from the
prompt's markers) and ``_secret`` (the random half of its result URL token). Each style renders
the dict in its own shape.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flask import Response, current_app, jsonify, request

from ..state import SimulatorState
from ..views import FAIL_MARKER

#: A prompt holding this ends ``cancelled`` after two steps (202 resellers only; elsewhere
#: it is just text).
CANCEL_MARKER = "[sim:cancel]"
#: A prompt holding this ends ``expired`` after three steps, where it would have completed
#: (202 resellers only).
EXPIRE_MARKER = "[sim:expire]"
#: A prompt holding this completes, but new-api's ``/content`` then finds its upstream gone
#: (502); the other styles ignore it.
GONE_MARKER = "[sim:gone]"

Outcome = Literal["completed", "failed", "cancelled", "expired"]

#: How long a signed result URL lives, in seconds (ofox's ``unsigned_urls``: 24 h).
RESULT_TTL = 24 * 3600


class GatewayError(Exception):
    """An error answered verbatim: ``body`` (compact JSON unless it is ``str``) with ``status``."""

    def __init__(
        self,
        status: int,
        body: Mapping[str, Any] | str,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        super().__init__(body if isinstance(body, str) else json.dumps(body))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.content_type = content_type

    def response(self) -> Response:
        """This error as a Flask response."""
        if isinstance(self.body, str):
            payload, content_type = self.body, self.content_type or "text/plain"
        else:
            payload = json.dumps(self.body, separators=(",", ":"), ensure_ascii=False)
            content_type = self.content_type or "application/json"
        # content_type, not mimetype: Flask would add "; charset=utf-8" to text/plain.
        response = Response(payload, status=self.status, headers=self.headers)
        response.headers["Content-Type"] = content_type
        return response


def render_gateway_error(error: GatewayError) -> Response:
    """Flask error handler for :class:`GatewayError`."""
    return error.response()


def get_state() -> SimulatorState:
    """The app's :class:`SimulatorState`."""
    state: SimulatorState = current_app.extensions["sora_simulator"]
    return state


def api_key() -> str | None:
    """The key this gateway was built to require, if any."""
    key: str | None = current_app.config["SORA_GATEWAY_API_KEY"]
    return key


def result_base_url() -> str | None:
    """Where this gateway's result host lives (``create_gateway_app(result_base_url=...)``)."""
    base: str | None = current_app.config["SORA_GATEWAY_RESULT_BASE_URL"]
    return base


def bearer_token() -> str:
    """The token of ``Authorization: Bearer <token>``, or ``""``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def same_key(presented: str, expected: str) -> bool:
    """Compare keys in constant time."""
    return hmac.compare_digest(presented.encode(), expected.encode())


def outcome_for(prompt: str) -> Outcome:
    """How a job with this prompt ends, from its markers."""
    if FAIL_MARKER in prompt:
        return "failed"
    if CANCEL_MARKER in prompt:
        return "cancelled"
    if EXPIRE_MARKER in prompt:
        return "expired"
    return "completed"


def new_job(job_id: str, *, prompt: str, model: str, size: str, seconds: str) -> dict[str, Any]:
    """Store and return a new job whose clock starts now."""
    job: dict[str, Any] = {
        "id": job_id,
        "model": model,
        "prompt": prompt,
        "size": size,
        "seconds": seconds,
        "_started": time.time(),
        "_outcome": outcome_for(prompt),
        "_secret": secrets.token_hex(16),
    }
    get_state().add_video(job)
    return job


@dataclass(frozen=True)
class Phase:
    """Where a job is on its clock: its status word, progress, and when it ended (if it did)."""

    status: str
    progress: int
    ended_at: float | None


def phase(job: Mapping[str, Any], seconds_per_step: float, now: float | None = None) -> Phase:
    """``queued`` for one step, ``in_progress`` for two, then the job's outcome.

    ``failed`` and ``cancelled`` end after two steps, ``completed`` and ``expired`` after three,
    as the OpenAI simulator's clock does.
    """
    started: float = job["_started"]
    elapsed = (time.time() if now is None else now) - started
    steps = elapsed / seconds_per_step if seconds_per_step > 0 else float("inf")
    outcome: Outcome = job["_outcome"]
    if outcome in ("failed", "cancelled") and steps >= 2:
        return Phase(outcome, 0, started + 2 * seconds_per_step)
    if steps < 1:
        return Phase("queued", 0, None)
    if steps < 3:
        return Phase("in_progress", min(99, max(1, int((steps - 1) * 50))), None)
    return Phase(outcome, 100 if outcome == "completed" else 0, started + 3 * seconds_per_step)


def job_phase(job: Mapping[str, Any]) -> Phase:
    """:func:`phase` of ``job`` now, on this app's clock."""
    return phase(job, get_state().seconds_per_step)


def signed_result_url(base: str, job: Mapping[str, Any], expires_at: int) -> str:
    """``<base>/<token>/<id>.mp4``, the token saying until when the result host serves it."""
    return f"{base.rstrip('/')}/{expires_at}-{job['_secret']}/{job['id']}.mp4"


def read_fields() -> tuple[dict[str, Any], bool]:
    """The create body's fields and whether it was JSON.

    JSON values keep their JSON types; form values are strings (the first of each name).
    Raises :class:`ValueError` for a JSON body that is malformed or not an object.
    """
    if request.mimetype == "application/json":
        body = json.loads(request.get_data() or b"null")
        if not isinstance(body, dict):
            raise ValueError(f"expected a JSON object, got {json_kind(body)}")
        return body, True
    return request.form.to_dict(), False


def json_kind(value: object) -> str:
    """Name a JSON value's kind the way Go's ``encoding/json`` does (``number``, ``object``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def list_page(render: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    """OpenAI's list of the stored videos, newest first unless ``order=asc``, at most
    ``limit`` (20), each written by ``render``: what LiteLLM and the resellers answer alike."""
    jobs = get_state().list_videos()
    if request.args.get("order", "desc") == "desc":
        jobs.reverse()
    limit = request.args.get("limit", "20")
    page = [render(job) for job in jobs[: int(limit) if limit.isdigit() else 20]]
    return jsonify(
        object="list",
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=len(jobs) > len(page),
    )
