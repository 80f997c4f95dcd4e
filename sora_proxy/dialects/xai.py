"""xAI's video API (``https://api.x.ai/v1``) as an upstream (``shared/dialects/xai.md``).

A create is ``POST /videos/generations`` with JSON (``duration`` an integer 1..15, the size as
``resolution`` + ``aspect_ratio``, a reference image as ``image: {url}``) answered only
``{request_id}``; ``GET /videos/{request_id}`` says ``pending`` (or nothing at all), ``done``,
``failed`` or ``expired``, every one with HTTP 200. ``done`` is a success only with
``video.respect_moderation`` true and a ``video.url``: a temporary public link, fetched without
the key. Errors are ``{code, error}``, and a wrong key is a 400, not a 401. There is no list,
delete, content endpoint or cancel, so the proxy owns these videos. Edits and extensions take
the source video's URL, not an id, and remix has no equivalent: all three are refused.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidRequest, ProxyError, UpstreamAuthFailed
from ..streaming import parse_object
from .base import (
    ContentSource,
    Dialect,
    EncodedBody,
    Fail,
    JobState,
    Operation,
    refuse_unsendable,
)

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan

log = logging.getLogger("sora_proxy.dialects.xai")

#: The seconds xAI can make (``duration``).
MIN_DURATION, MAX_DURATION = 1, 15
#: xAI's aspect ratios as width / height.
ASPECT_RATIOS: dict[str, float] = {
    "1:1": 1.0,
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
}
#: How long ``video.url`` is served (the SDK: 24 hours).
RESULT_TTL = 24 * 3600
#: Caller fields with the same name and meaning at xAI, and the JSON type each must have.
_PASSED_FIELDS: dict[str, type] = {"generate_audio": bool, "user": str}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_AUTH_FAILED_MESSAGE = (
    "The proxy's credentials for the upstream service were refused; the operator has been "
    "told. Nothing was generated."
)


def resolution_and_aspect(size: str) -> tuple[str, str]:
    """xAI's ``resolution`` and ``aspect_ratio`` for an OpenAI ``WIDTHxHEIGHT`` size: the
    nearest aspect ratio, and the resolution by the short side (1792x1024 is ``720p``)."""
    width, _, height = size.partition("x")
    w, h = int(width), int(height)
    ratio = w / h
    aspect = min(ASPECT_RATIOS, key=lambda name: abs(math.log(ASPECT_RATIOS[name] / ratio)))
    short = min(w, h)
    resolution = "1080p" if short >= 1080 else "720p" if short >= 720 else "480p"
    return resolution, aspect


class XaiDialect(Dialect):
    """xAI's deferred video generation: proxy-owned videos, results at public temporary URLs."""

    name = "xai"

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> XaiDialect:
        """No keys of its own: ``base_url`` (``https://api.x.ai/v1``) and ``api_key`` suffice."""
        return cls()

    @property
    def proxy_owned(self) -> bool:
        """xAI answers a create with only ``request_id`` and has no list or delete."""
        return True

    @property
    def operations(self) -> frozenset[Operation]:
        """Create, retrieve and the MP4; list and delete are the proxy's own (nothing is sent
        upstream for them)."""
        return frozenset({"create", "retrieve", "content"})

    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """JSON: the upstream's model name, ``duration`` as an int, the size as ``resolution``
        and ``aspect_ratio``, the reference image as ``image: {url: "data:..."}``."""
        refuse_unsendable(upstream, plan)
        body: dict[str, Any] = {
            "model": upstream.models[plan.model].deployment,
            "prompt": plan.fields.get("prompt", ""),
        }
        if plan.seconds is not None:
            body["duration"] = _duration(plan.seconds)
        if plan.size is not None:
            body["resolution"], body["aspect_ratio"] = resolution_and_aspect(plan.size)
        if plan.image is not None:
            encoded = base64.b64encode(plan.image.data).decode("ascii")
            body["image"] = {"url": f"data:{plan.image.mime_type};base64,{encoded}"}
        for name, value in plan.fields.items():
            if name in ("prompt", "model", "size", "seconds", "metadata"):
                continue  # metadata: xAI has nowhere to keep it
            body[name] = _passed_field(upstream, name, value)
        return dataclasses.replace(EncodedBody.json(body), path="/videos/generations")

    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """Answers are turned into the proxy's own objects (:meth:`read_job`)."""
        return body

    def read_job(self, upstream: Upstream, status: int, body: bytes) -> JobState:
        """The create answer ``{request_id}`` (a new ``queued`` job) or a poll answer."""
        answer = parse_object(body)
        if answer is None:
            raise _bad_answer(upstream, "answered with something other than a JSON object")
        request_id = answer.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise _bad_answer(upstream, "answered without a request_id")
        if "status" in answer:
            return _job(answer)
        return JobState(request_id, _pending(answer, created_at=int(time.time())))

    def poll_path(self, upstream: Upstream, handle: Mapping[str, Any]) -> str:
        """``/videos/{request_id}``."""
        return f"/videos/{handle['id']}"

    def read_poll(self, upstream: Upstream, status: int, body: bytes) -> JobState | None:
        """A 2xx poll answer as the job (an empty ``request_id`` is kept from the store); a
        refused key is logged, and like any other error leaves the stored state."""
        if 200 <= status < 300:
            answer = parse_object(body)
            if answer is None:
                log.warning("upstream %s answered a poll with no JSON object", upstream.name)
                return None
            return _job(answer)  # no status at all (seen through resellers): still pending
        if _key_refused(upstream, status, body):
            _log_key_refused(upstream, status, "a poll")
        return None

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """``video.url``, fetched without the key; xAI makes no thumbnail or spritesheet."""
        urls = handle.get("result_urls") or []
        if variant != "video" or not urls:
            return None
        return ContentSource(url=urls[0])

    def read_error(self, upstream: Upstream, status: int, body: bytes) -> ProxyError | None:
        """xAI's ``{code, error}`` as the OpenAI envelope; its wrong-key 400 as 502
        ``upstream_auth_failed`` (logged, nothing of its text relayed)."""
        if _key_refused(upstream, status, body):
            if upstream.api_key is None:  # pass-through: the caller's own key, theirs to see
                return ProxyError(
                    "The upstream refused your API key.",
                    code="invalid_api_key",
                    status=401,
                    error_type="invalid_request_error",
                )
            _log_key_refused(upstream, status, "a create")
            return UpstreamAuthFailed(_AUTH_FAILED_MESSAGE)
        message, _ = _error_text(body)
        text = message or f"The upstream answered HTTP {status}."
        lowered = text.lower()
        if status == 429:
            credits = "credit" in lowered or "quota" in lowered
            return ProxyError(
                text,
                code="insufficient_quota" if credits else "rate_limit_exceeded",
                status=429,
                error_type="insufficient_quota" if credits else "requests",
            )
        if 400 <= status < 500:
            code = "invalid_request"
            if "moderat" in lowered or "content polic" in lowered or "safety" in lowered:
                code = "moderation_blocked"
            elif status == 404:
                code = "not_found"
            return ProxyError(text, code=code, status=status, error_type="invalid_request_error")
        return ProxyError(
            text,
            code="upstream_error",
            status=status if 500 <= status <= 599 else 502,
            error_type="server_error",
        )


def _duration(seconds: str) -> int:
    """The caller's ``seconds`` as xAI's integer ``duration``."""
    try:
        value = int(seconds)
    except ValueError:
        value = 0
    if not MIN_DURATION <= value <= MAX_DURATION:
        raise InvalidRequest(
            f"Invalid 'seconds': this upstream makes {MIN_DURATION} to {MAX_DURATION} seconds.",
            param="seconds",
        )
    return value


def _passed_field(upstream: Upstream, name: str, value: Any) -> Any:
    """A caller field xAI reads under the same name, in its JSON type; any other is refused
    rather than dropped, so nothing the caller asked for is silently ignored."""
    wanted = _PASSED_FIELDS.get(name)
    if wanted is None:
        raise InvalidRequest(
            f"The upstream '{upstream.name}' has no parameter '{name}'.",
            param=name,
            code="unsupported_by_upstream",
        )
    if wanted is bool and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if not isinstance(value, wanted):
        raise InvalidRequest(
            f"Invalid '{name}': expected a {wanted.__name__}.", param=name, code="invalid_type"
        )
    return value


def _pending(answer: Mapping[str, Any], created_at: int | None = None) -> dict[str, Any]:
    """``pending`` (or no status): ``queued`` until ``progress`` says work has begun."""
    value = answer.get("progress")
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else 0
    progress = max(0, min(99, int(number)))
    return {
        "object": "video",
        "status": "in_progress" if progress > 0 else "queued",
        "progress": progress,
        "created_at": created_at,
        "completed_at": None,
        "expires_at": None,
        "error": None,
    }


def _job(answer: Mapping[str, Any]) -> JobState:
    """A poll answer as a job; an empty ``request_id`` leaves the stored one in place."""
    request_id = answer.get("request_id")
    video = answer.get("video")
    url = video.get("url") if isinstance(video, Mapping) else None
    state = _polled(answer, video if isinstance(video, Mapping) else {})
    urls = (url,) if state["status"] == "completed" and isinstance(url, str) else ()
    return JobState(request_id if isinstance(request_id, str) else "", state, result_urls=urls)


def _polled(answer: Mapping[str, Any], video: Mapping[str, Any]) -> dict[str, Any]:
    """A poll answer in OpenAI's words; unknown words keep the job waiting, as the SDK does."""
    word = answer.get("status")
    if word == "done":
        url = video.get("url")
        if video.get("respect_moderation") is False:
            return _failed(
                "moderation_blocked",
                "The upstream's moderation blocked this video; no video is available.",
            )
        if not isinstance(url, str) or not url:
            return _failed("upstream_error", "The upstream finished without a video URL.")
        now = int(time.time())
        finished = {
            "object": "video",
            "status": "completed",
            "progress": 100,
            "completed_at": now,
            "expires_at": now + RESULT_TTL,
            "error": None,
        }
        duration = video.get("duration")
        if isinstance(duration, int) and not isinstance(duration, bool) and duration > 0:
            finished["seconds"] = str(duration)
        return finished
    if word == "failed":
        error = answer.get("error")
        code, message = "upstream_error", "The upstream reported that the generation failed."
        if isinstance(error, Mapping):
            if isinstance(error.get("code"), str) and error["code"]:
                code = error["code"]
            if isinstance(error.get("message"), str) and error["message"]:
                message = error["message"]
        elif isinstance(error, str) and error:
            message = error
        return _failed(code, message)
    if word == "expired":
        return _failed("expired", "The upstream's job expired before its video was fetched.")
    return _pending(answer)


def _failed(code: str, message: str) -> dict[str, Any]:
    return {
        "object": "video",
        "status": "failed",
        "progress": 0,
        "completed_at": None,
        "expires_at": None,
        "error": {"code": code, "message": message},
    }


def _error_text(body: bytes) -> tuple[str | None, Any]:
    """``error`` and ``code`` of ``{code, error}`` (an OpenAI-style ``error`` object too)."""
    answer = parse_object(body) or {}
    error = answer.get("error")
    if isinstance(error, Mapping):
        message = error.get("message")
        return (message if isinstance(message, str) else None), error.get("code")
    return (error if isinstance(error, str) else None), answer.get("code")


def _key_refused(upstream: Upstream, status: int, body: bytes) -> bool:
    """xAI's wrong key: a 400 (or 401/403) whose message is about the API key."""
    if status not in (400, 401, 403):
        return False
    message, _ = _error_text(body)
    return status != 400 or (message is not None and "api key" in message.lower())


def _log_key_refused(upstream: Upstream, status: int, what: str) -> None:
    log.error(
        "upstream %s refused the proxy's key (HTTP %d on %s): check its api_key",
        upstream.name,
        status,
        what,
    )


def _bad_answer(upstream: Upstream, problem: str) -> ProxyError:
    return ProxyError(
        f"The upstream '{upstream.name}' {problem}.",
        code="upstream_bad_answer",
        status=502,
        headers={"x-should-retry": "false"},
    )
