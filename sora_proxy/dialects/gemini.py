"""The Gemini Developer API's Veo models (``v1beta``, API key) as an upstream.

The wire is the one ``google-genai`` 2.34.0 writes (``shared/dialects/gemini.md``): a create is
``POST /models/{model}:predictLongRunning`` with ``instances[0]`` (``prompt``, ``image`` as
``{bytesBase64Encoded, mimeType}``) and ``parameters`` (``aspectRatio``, ``resolution``,
``durationSeconds`` as an integer); it answers a long-running operation whose ``name``
(``models/{model}/operations/{id}``) is polled as given. There is no status word and no
progress; a safety-filtered job is ``done`` with neither ``error`` nor samples; the video's URI
needs the key. Every request carries the key in ``x-goog-api-key``, never in the query (query
strings end up in access logs). The proxy owns these videos: there is no list or delete.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from ..errors import InvalidRequest, ProxyError, UpstreamAuthFailed
from ..sizing import ALLOWED_SECONDS, VideoSize
from ..streaming import parse_object
from .base import (
    Body,
    ContentSource,
    Dialect,
    EncodedBody,
    Fail,
    JobState,
    Operation,
    OutgoingRequest,
    refuse_unsendable,
)

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan

#: Seconds each Veo family can make (``gemini.md`` §3), for upstreams whose file does not list
#: a model's ``seconds``. Longest prefix first.
_FAMILY_SECONDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("veo-2", ("5", "6", "7", "8")),
    ("veo-3", ("4", "6", "8")),
)
#: A frame's short side -> Veo's ``resolution``.
_RESOLUTIONS = {720: "720p", 1080: "1080p", 2160: "4k"}
#: Caller fields (beyond prompt, model, size, seconds) with a Veo parameter of the same meaning.
_PARAMETERS = {"negative_prompt": "negativePrompt", "person_generation": "personGeneration"}
#: Caller fields that have no Veo equivalent but change nothing if left out.
_IGNORED = frozenset({"prompt", "model", "size", "seconds", "metadata"})
#: gRPC canonical code (a failed operation's ``error.code``) -> ``error.code`` for the caller.
_GRPC_CODES = {
    1: "cancelled",
    3: "invalid_request",
    4: "upstream_timeout",
    5: "not_found",
    7: "permission_denied",
    8: "rate_limited",
    9: "invalid_request",
    11: "invalid_request",
    13: "internal_error",
    14: "internal_error",
}
#: Google's status name (an HTTP error's ``error.status``) -> ``error.code`` for the caller.
_STATUS_CODES = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "RESOURCE_EXHAUSTED": "rate_limit_exceeded",
    "INTERNAL": "upstream_error",
    "UNAVAILABLE": "upstream_error",
    "DEADLINE_EXCEEDED": "upstream_timeout",
}
#: How a generated file's id is found in its URI, as google-genai's ``t_file_name`` finds it.
_FILE_ID = re.compile(r"files/([a-z0-9]+)")
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


class GeminiDialect(Dialect):
    """Veo on the Gemini Developer API (``base_url`` ending in ``/v1beta``)."""

    name = "gemini"

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> GeminiDialect:
        """No keys of its own (the key is the upstream's ``api_key``)."""
        return cls()

    @property
    def proxy_owned(self) -> bool:
        """Operations are not videos: the proxy mints ids and keeps each job's state."""
        return True

    @property
    def operations(self) -> frozenset[Operation]:
        """Create, retrieve and the MP4; list and delete are answered from the store."""
        return frozenset({"create", "retrieve", "content"})

    def credentials(self, upstream: Upstream, caller_authorization: str | None) -> dict[str, str]:
        """The key in ``x-goog-api-key`` (never in the query, where logs keep URLs)."""
        return {"x-goog-api-key": upstream.api_key} if upstream.api_key else {}

    def request(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        caller_authorization: str | None = None,
    ) -> OutgoingRequest:
        """Paths (an operation name, a file download) under ``base_url`` as given; a ``key``
        query parameter is never sent, and neither is the caller's ``Authorization``."""
        outgoing = super().request(
            upstream,
            method,
            path,
            headers=headers,
            params=params,
            body=body,
            caller_authorization=None,
        )
        return dataclasses.replace(
            outgoing, params={k: v for k, v in outgoing.params.items() if k != "key"}
        )

    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """``instances[0]`` (prompt, image) and ``parameters``, as google-genai writes them.

        :raises InvalidRequest: what Veo cannot do (a file id, a square or non-16:9 size,
            seconds the model does not make, fields with no Veo meaning), before any request.
        """
        route = upstream.models[plan.model]
        deployment = route.deployment.removeprefix("models/")
        refuse_unsendable(upstream, plan)
        instance: dict[str, Any] = {}
        prompt = plan.fields.get("prompt")
        if isinstance(prompt, str) and prompt:
            instance["prompt"] = prompt
        if plan.image is not None:
            instance["image"] = {
                "bytesBase64Encoded": base64.b64encode(plan.image.data).decode("ascii"),
                "mimeType": plan.image.mime_type,
            }
        parameters: dict[str, Any] = {}
        if plan.size is not None:
            parameters.update(_size_parameters(plan.size))
        if plan.seconds is not None:
            parameters["durationSeconds"] = _duration(deployment, route.seconds, plan.seconds)
        for name, value in plan.fields.items():
            if name in _PARAMETERS and isinstance(value, str):
                parameters[_PARAMETERS[name]] = value
            elif name not in _IGNORED and name not in _PARAMETERS:
                raise InvalidRequest(
                    f"The upstream '{upstream.name}' (Veo) has no '{name}'.",
                    param=name,
                    code="unsupported_by_upstream",
                )
        body: dict[str, Any] = {"instances": [instance]}
        if parameters:
            body["parameters"] = parameters
        return EncodedBody(
            json.dumps(body).encode("utf-8"),
            "application/json",
            path=f"/models/{deployment}:predictLongRunning",
        )

    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """Answers are turned into the proxy's own objects (:meth:`read_job`)."""
        return body

    def read_job(self, upstream: Upstream, status: int, body: bytes) -> JobState:
        """An operation as a job: ``done`` absent is ``queued`` (a create's answer; polls say
        ``in_progress``); done with samples is completed; done with ``error``, with filtered
        samples only, or with nothing, is failed."""
        answer = parse_object(body)
        name = answer.get("name") if answer is not None else None
        if answer is None or not isinstance(name, str) or not name:
            raise ProxyError(
                f"The upstream '{upstream.name}' answered without an operation name.",
                code="upstream_bad_answer",
                status=502,
                headers={"x-should-retry": "false"},
            )
        if answer.get("done") is not True:
            return JobState(name, _video("queued"))
        error = answer.get("error")
        if isinstance(error, Mapping):
            return JobState(name, _failed(_grpc_code(error.get("code")), error.get("message")))
        response = answer.get("response")
        generated = response.get("generateVideoResponse") if isinstance(response, Mapping) else None
        generated = generated if isinstance(generated, Mapping) else {}
        samples = generated.get("generatedSamples")
        uris = [
            sample["video"]["uri"]
            for sample in (samples if isinstance(samples, list) else [])
            if isinstance(sample, Mapping)
            and isinstance(sample.get("video"), Mapping)
            and isinstance(sample["video"].get("uri"), str)
        ]
        if uris:
            video = _video("completed")
            video["completed_at"] = int(time.time())
            # Not credential-free (the key is needed): content_source turns it into a path.
            return JobState(name, video, result_urls=tuple(uris))
        reasons = generated.get("raiMediaFilteredReasons")
        filtered = generated.get("raiMediaFilteredCount")
        if (isinstance(filtered, int) and filtered > 0) or reasons:
            first = reasons[0] if isinstance(reasons, list) and reasons else None
            message = first or "The video was blocked by the upstream's safety filters."
            return JobState(name, _failed("moderation_blocked", message))
        return JobState(name, _failed("no_output", "The upstream finished without a video."))

    def read_poll(self, upstream: Upstream, status: int, body: bytes) -> JobState | None:
        """A 404 ``NOT_FOUND`` means the operation is gone (Google keeps them ~2 days):
        terminal. Other errors are transient; the stored state stands."""
        if 200 <= status < 300:
            job = self.read_job(upstream, status, body)
            if job.video["status"] == "queued":
                return JobState(job.upstream_id, _video("in_progress"))
            return job
        if status == 404 and _google_error(body).get("status") == "NOT_FOUND":
            return JobState("", _failed("expired", "The upstream no longer knows this job."))
        return None

    def poll_path(self, upstream: Upstream, handle: Mapping[str, Any]) -> str:
        """``/{name}``: the operation name as given, slashes and all."""
        return f"/{handle['id']}"

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """The first sample, asked under ``base_url`` with the key: a URI under ``base_url``
        as given (minus any ``key``), else ``/files/{id}:download?alt=media`` as google-genai
        does, so the key never goes to another host. No thumbnails or spritesheets."""
        urls = handle.get("result_urls") or []
        if variant != "video" or not urls:
            return None
        uri = str(urls[0])
        if uri.startswith(upstream.base_url + "/"):
            parts = urlsplit(uri)
            query = [
                (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "key"
            ]
            relative = parts.path[len(urlsplit(upstream.base_url).path) :]
            return ContentSource(path=relative + (f"?{urlencode(query)}" if query else ""))
        match = _FILE_ID.search(uri)
        if match is None:
            return None
        return ContentSource(path=f"/files/{match.group(1)}:download?alt=media")

    def read_error(self, upstream: Upstream, status: int, body: bytes) -> ProxyError | None:
        """Google's ``{"error": {code, message, status, details}}`` as the OpenAI envelope; a
        ``RetryInfo`` delay becomes ``retry-after``; a refused key is the operator's problem."""
        error = _google_error(body)
        message = str(error.get("message") or f"The upstream answered HTTP {status}.")
        details = error.get("details")
        details = (
            [d for d in details if isinstance(d, Mapping)] if isinstance(details, list) else []
        )
        if any(d.get("reason") == "API_KEY_INVALID" for d in details):
            return UpstreamAuthFailed(
                "The proxy's credentials for the upstream service were refused; the operator "
                "has been told. Nothing was generated.",
                headers={"x-should-retry": "false"},
            )
        headers: dict[str, str] = {}
        for detail in details:
            delay = detail.get("retryDelay")
            matched = _DELAY.match(delay) if isinstance(delay, str) else None
            if matched:
                headers["retry-after"] = str(max(1, round(float(matched.group(1)))))
        grpc_status = error.get("status")
        code = _STATUS_CODES.get(grpc_status) if isinstance(grpc_status, str) else None
        if status == 404:
            # The configured model is unknown upstream: the operator's to fix, not the caller's.
            return ProxyError(message, code="upstream_model_not_found", status=502, headers=headers)
        return ProxyError(
            message,
            code=code or ("upstream_error" if status >= 500 else None),
            status=status if 400 <= status <= 599 else 502,
            error_type="invalid_request_error" if 400 <= status < 500 else "server_error",
            headers=headers,
        )


def _size_parameters(size: str) -> dict[str, str]:
    """``aspectRatio`` and ``resolution`` for an exact 16:9 or 9:16 frame of 720, 1080, 2160."""
    try:
        frame = VideoSize.parse(size)
    except ValueError:
        frame = VideoSize(0, 0)
    short, long = sorted((frame.width, frame.height))
    resolution = _RESOLUTIONS.get(short)
    if resolution is None or long * 9 != short * 16:
        raise InvalidRequest(
            f"size '{size}' has no Veo equivalent; Veo makes 16:9 and 9:16 frames at 720p, "
            "1080p or 4k (1280x720, 720x1280, 1920x1080, 1080x1920, 3840x2160, 2160x3840).",
            param="size",
        )
    return {
        "aspectRatio": "16:9" if frame.width > frame.height else "9:16",
        "resolution": resolution,
    }


def _duration(deployment: str, listed: tuple[str, ...], seconds: str) -> int:
    """``seconds`` as Veo's integer, checked against the model's durations: the upstreams
    file's list when it gives one, else what the model's family is known to make."""
    allowed = listed
    if listed == ALLOWED_SECONDS:  # the Sora default: the file did not list this model's
        allowed = next((s for prefix, s in _FAMILY_SECONDS if deployment.startswith(prefix)), ())
        allowed = allowed or ("4", "6", "8")
    if seconds not in allowed or not seconds.isdigit():
        raise InvalidRequest(
            f"Invalid 'seconds': Must be one of {', '.join(allowed)}.", param="seconds"
        )
    return int(seconds)


def _video(status: str) -> dict[str, Any]:
    video: dict[str, Any] = {"object": "video", "status": status, "error": None}
    # Google reports no progress: 0 until done, 100 when completed (no invented figures).
    video["progress"] = 100 if status == "completed" else 0
    if status == "queued":
        video["created_at"] = int(time.time())
    return video


def _failed(code: str, message: Any) -> dict[str, Any]:
    video = _video("failed")
    video["completed_at"] = int(time.time())
    text = message if isinstance(message, str) and message else "The generation failed upstream."
    video["error"] = {"code": code, "message": text}
    return video


def _grpc_code(code: Any) -> str:
    if isinstance(code, bool) or not isinstance(code, int):
        return "upstream_error"
    return _GRPC_CODES.get(code, "upstream_error")


def _google_error(body: bytes) -> Mapping[str, Any]:
    answer = parse_object(body) or {}
    inner = answer.get("error")
    return inner if isinstance(inner, Mapping) else {}
