"""OpenRouter's video API (``https://openrouter.ai/api/v1``) as an upstream.

Per ``shared/dialects/openrouter.md``: a create is ``POST /videos`` with JSON (``duration`` an
integer, the size as ``resolution`` + ``aspect_ratio`` or ``size``, a reference image as a
``first_frame`` in ``frame_images``), answered **202** ``{id, polling_url, status:
"pending"}``, where ``polling_url`` may be relative. The job reads ``pending``,
``in_progress``, ``completed``, ``failed``, ``cancelled`` or ``expired``; a failure's ``error``
is a string. A finished job has signed ``urls`` (fetched without the key, until
``expires_at``) and ``unsigned_urls`` (``/videos/{id}/content?index=0``, with the key). There
is no list, delete or cancel, so the proxy owns these videos; ``usage`` (the cost in USD) and
``generation_id`` stay in the caller's ``video`` object. Errors are ``{"error": {"code":
<int>, "message"}}``.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

from ..errors import InvalidRequest, ProxyError
from ..references import PARAM as REFERENCE_PARAM
from ..streaming import parse_object
from .base import ContentSource, Dialect, EncodedBody, Fail, JobState, Operation, refuse_unsendable
from .statuses import normalize_status, normalize_timestamp

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan

SizeForm = Literal["resolution", "size"]

#: OpenRouter's aspect-ratio words as width / height.
ASPECT_RATIOS: dict[str, float] = {
    "16:9": 16 / 9,
    "9:16": 9 / 16,
    "1:1": 1.0,
    "4:3": 4 / 3,
    "3:4": 3 / 4,
    "3:2": 3 / 2,
    "2:3": 2 / 3,
    "21:9": 21 / 9,
    "9:21": 9 / 21,
}
#: OpenRouter's resolution words by the short side in pixels.
RESOLUTIONS: dict[int, str] = {360: "360p", 480: "480p", 720: "720p", 768: "768p", 1080: "1080p"}
#: How far (as a log ratio, about 1%) a size may be from an aspect-ratio word and still be it.
_ASPECT_TOLERANCE = 0.01
#: ``progress`` shown for ``in_progress``: OpenRouter reports none.
IN_PROGRESS_PERCENT = 50
#: Caller fields with the same name and meaning at OpenRouter, and the JSON type of each.
_PASSED_FIELDS: dict[str, type] = {"generate_audio": bool, "seed": int, "user": str}
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
_ID_TIME = re.compile(r"-(\d{9,11})-")
_MODERATION_WORDS = ("moderat", "content policy", "safety", "flagged")
#: Words in a 400's message → the caller's field it is about.
_PARAM_WORDS = (
    ("duration", "seconds"),
    ("size", "size"),
    ("resolution", "size"),
    ("aspect", "size"),
    ("frame", REFERENCE_PARAM),
    ("prompt", "prompt"),
    ("model", "model"),
)


def resolution_and_aspect(size: str) -> tuple[str, str] | None:
    """``(resolution, aspect_ratio)`` for a ``WIDTHxHEIGHT`` size when both words exist
    (1280x720 is ``720p`` + ``16:9``), else ``None`` (1792x1024 is 7:4: no word)."""
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or not int(width) or not int(height):
        return None
    ratio = int(width) / int(height)
    aspect = min(ASPECT_RATIOS, key=lambda word: abs(math.log(ASPECT_RATIOS[word] / ratio)))
    resolution = RESOLUTIONS.get(min(int(width), int(height)))
    if resolution is None or abs(math.log(ASPECT_RATIOS[aspect] / ratio)) > _ASPECT_TOLERANCE:
        return None
    return resolution, aspect


@dataclass(frozen=True)
class OpenRouterJob(JobState):
    """A job plus what OpenRouter says about its outputs: ``result_urls`` are the signed
    ``urls`` (no key), ``unsigned_urls`` need the key, ``urls_expire_at`` ends the former."""

    unsigned_urls: tuple[str, ...] = ()
    urls_expire_at: int | None = None

    def handle(self) -> dict[str, Any]:
        """The job id, polling URL, and both kinds of output URL."""
        return {
            **super().handle(),
            "unsigned_urls": list(self.unsigned_urls),
            "urls_expire_at": self.urls_expire_at,
        }


class OpenRouterDialect(Dialect):
    """OpenRouter's asynchronous video jobs: proxy-owned videos, outputs at signed URLs.

    :param size_as: ``"resolution"`` (default) sends a size as ``resolution`` +
        ``aspect_ratio`` where both words exist, else as ``size``; ``"size"`` always sends
        ``size`` (for models whose ``supported_sizes`` list it).
    """

    name = "openrouter"
    config_keys = frozenset({"size_as"})

    def __init__(self, size_as: SizeForm = "resolution") -> None:
        self.size_as: SizeForm = size_as

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> OpenRouterDialect:
        """Read ``size_as``; ``base_url`` (``https://openrouter.ai/api/v1``) and ``api_key``
        are every upstream's."""
        size_as = entry.get("size_as", "resolution")
        if size_as == "resolution":
            return cls("resolution")
        if size_as == "size":
            return cls("size")
        raise fail("size_as must be 'resolution' or 'size'")

    @property
    def proxy_owned(self) -> bool:
        """OpenRouter answers a create with a job handle and has no list or delete."""
        return True

    @property
    def operations(self) -> frozenset[Operation]:
        """Create, retrieve and the MP4; list and delete are the proxy's own. Its
        ``previous_job_id`` edits and extends on the same model, not OpenAI's remix."""
        return frozenset({"create", "retrieve", "content"})

    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """JSON: the upstream's model slug, ``duration`` as an int, the size, and the
        reference image as the ``first_frame`` (a data URI)."""
        refuse_unsendable(upstream, plan)
        body: dict[str, Any] = {"model": upstream.models[plan.model].deployment}
        if plan.fields.get("prompt"):
            body["prompt"] = plan.fields["prompt"]
        if plan.seconds is not None:
            body["duration"] = _duration(plan.seconds)
        if plan.size is not None:
            body.update(self._size(plan.size))
        if plan.image is not None:
            encoded = base64.b64encode(plan.image.data).decode("ascii")
            body["frame_images"] = [
                {
                    "type": "image_url",
                    "image_url": {"url": f"data:{plan.image.mime_type};base64,{encoded}"},
                    "frame_type": "first_frame",
                }
            ]
        for name, value in plan.fields.items():
            if name in ("prompt", "model", "size", "seconds", "metadata"):
                continue  # metadata: OpenRouter has nowhere to keep it
            body[name] = _passed_field(upstream, name, value)
        return EncodedBody.json(body)

    def _size(self, size: str) -> dict[str, str]:
        words = resolution_and_aspect(size) if self.size_as == "resolution" else None
        if words is None:
            return {"size": size}
        return {"resolution": words[0], "aspect_ratio": words[1]}

    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """Answers are turned into the proxy's own objects (:meth:`read_job`)."""
        return body

    def read_job(self, upstream: Upstream, status: int, body: bytes) -> JobState:
        """The create answer (202) or a poll answer: the same ``VideoGenerationResponse``."""
        answer = parse_object(body)
        job_id = answer.get("id") if answer is not None else None
        if answer is None or not isinstance(job_id, str) or not job_id:
            raise ProxyError(
                f"The upstream '{upstream.name}' answered without a job id.",
                code="upstream_bad_answer",
                status=502,
                headers={"x-should-retry": "false"},
            )
        video = _video(answer, job_id)
        completed = video["status"] == "completed"
        polling_url = answer.get("polling_url")
        expires_at = normalize_timestamp(answer.get("expires_at"))
        return OpenRouterJob(
            upstream_id=job_id,
            video=video,
            result_urls=_strings(answer.get("urls")) if completed else (),
            polling_url=polling_url if isinstance(polling_url, str) and polling_url else None,
            unsigned_urls=_strings(answer.get("unsigned_urls")) if completed else (),
            urls_expire_at=expires_at,
        )

    def poll_path(self, upstream: Upstream, handle: Mapping[str, Any]) -> str:
        """``polling_url`` resolved against ``base_url`` (it may be relative) when it lies
        under ``base_url``; else ``/videos/{id}``, so the key never goes elsewhere."""
        fallback = f"/videos/{handle['id']}"
        polling_url = handle.get("polling_url")
        if not isinstance(polling_url, str) or not polling_url:
            return fallback
        return _under_base(upstream, polling_url) or fallback

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """The first signed URL (no key) until it expires, then the keyed ``unsigned_urls``
        route (``/videos/{id}/content?index=0``). OpenRouter makes no thumbnail or sprites."""
        if variant != "video":
            return None
        signed = handle.get("result_urls") or []
        expires_at = handle.get("urls_expire_at")
        fresh = not isinstance(expires_at, int | float) or time.time() < expires_at
        if signed and fresh:
            return ContentSource(url=str(signed[0]))
        unsigned = handle.get("unsigned_urls") or []
        path = _under_base(upstream, str(unsigned[0])) if unsigned else None
        return ContentSource(path=path or f"/videos/{handle['id']}/content?index=0")

    def read_error(self, upstream: Upstream, status: int, body: bytes) -> ProxyError | None:
        """``{"error": {"code": <int>, "message"}}`` as the OpenAI envelope; 402 (no
        credits) as 429 ``insufficient_quota``, as OpenAI says it."""
        message = _error_message(body) or f"The upstream answered HTTP {status}."
        lowered = message.lower()
        if status == 402:
            return ProxyError(
                message, code="insufficient_quota", status=429, error_type="insufficient_quota"
            )
        if status == 429:
            return ProxyError(
                message, code="rate_limit_exceeded", status=429, error_type="requests"
            )
        if status == 413:
            return ProxyError(
                message, code="request_too_large", status=413, error_type="invalid_request_error"
            )
        if 400 <= status < 500:
            code = "invalid_request"
            if any(word in lowered for word in _MODERATION_WORDS):
                code = "moderation_blocked"
            elif status == 404:
                code = "not_found"
            param = next((p for word, p in _PARAM_WORDS if word in lowered), None)
            return ProxyError(
                message,
                code=code,
                param=param,
                status=status if status != 499 else 400,
                error_type="invalid_request_error",
            )
        return ProxyError(
            message,
            code="upstream_error",
            status=status if 500 <= status <= 599 else 502,
            error_type="server_error",
        )


def _duration(seconds: str) -> int:
    """The caller's ``seconds`` as OpenRouter's integer ``duration`` (the catalog's
    ``seconds`` for the model already hold only durations it supports)."""
    try:
        return int(seconds)
    except ValueError:
        raise InvalidRequest(
            "Invalid 'seconds': must be a whole number.", param="seconds"
        ) from None


def _passed_field(upstream: Upstream, name: str, value: Any) -> Any:
    """A caller field OpenRouter reads under the same name, in its JSON type; any other is
    refused rather than dropped, so nothing asked for is silently ignored."""
    wanted = _PASSED_FIELDS.get(name)
    if wanted is None:
        raise InvalidRequest(
            f"The upstream '{upstream.name}' has no parameter '{name}'.",
            param=name,
            code="unsupported_by_upstream",
        )
    if wanted is bool and isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if wanted is int and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
        raise InvalidRequest(
            f"Invalid '{name}': expected a {wanted.__name__}.", param=name, code="invalid_type"
        )
    return value


def _video(answer: Mapping[str, Any], job_id: str) -> dict[str, Any]:
    """The job object in OpenAI's words; no status word of OpenRouter's reaches a caller."""
    word = answer.get("status")
    status, failure = normalize_status(word)
    progress = {"queued": 0, "in_progress": IN_PROGRESS_PERCENT, "completed": 100}.get(status, 0)
    video: dict[str, Any] = {
        "object": "video",
        "status": status,
        "progress": progress,
        "created_at": _created_at(job_id),
        "completed_at": int(time.time()) if status == "completed" else None,
        "expires_at": normalize_timestamp(answer.get("expires_at")),
        "error": None,
    }
    if status == "failed":
        video["error"] = _failure(word, failure, answer.get("error"))
    usage = answer.get("usage")
    if isinstance(usage, Mapping):
        video["usage"] = {"cost": usage.get("cost"), "is_byok": usage.get("is_byok")}
    generation_id = answer.get("generation_id")
    if isinstance(generation_id, str) and generation_id:
        video["generation_id"] = generation_id
    return video


def _failure(word: Any, failure: str | None, error: Any) -> dict[str, str]:
    """``{code, message}`` from a terminal word and OpenRouter's ``error`` string."""
    message = error if isinstance(error, str) and error else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        message = error["message"]  # not OpenRouter's shape; read anyway
    code = failure or "upstream_error"
    if word == "failed":
        code = "generation_failed"
        if message and any(w in message.lower() for w in _MODERATION_WORDS):
            code = "moderation_blocked"
    defaults = {
        "cancelled": "The upstream cancelled the generation.",
        "expired": "The upstream's output expired before it was retrieved.",
    }
    fallback = defaults.get(code, "The upstream reported that the generation failed.")
    return {"code": code, "message": message or fallback}


def _created_at(job_id: str) -> int:
    """The unix time in a ``gen-vid-<unix>-<20 alnum>`` id, else now."""
    match = _ID_TIME.search(job_id)
    return int(match.group(1)) if match else int(time.time())


def _strings(value: Any) -> tuple[str, ...]:
    return (
        tuple(item for item in value if isinstance(item, str) and item)
        if isinstance(value, list)
        else ()
    )


def _under_base(upstream: Upstream, url: str) -> str | None:
    """``url`` (absolute, or relative to the API's origin) as a path under ``base_url``, or
    ``None`` when it points elsewhere."""
    absolute = urljoin(upstream.base_url + "/", url)
    base = upstream.base_url.rstrip("/")
    if urlsplit(absolute).netloc != urlsplit(base).netloc or not absolute.startswith(base + "/"):
        return None
    return absolute[len(base) :]


def _error_message(body: bytes) -> str | None:
    answer = parse_object(body) or {}
    error = answer.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"])
    return error if isinstance(error, str) and error else None
