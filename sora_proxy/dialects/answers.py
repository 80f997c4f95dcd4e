"""Reading job answers and error bodies that are almost, but not quite, OpenAI's.

Shared by the dialects whose upstreams answer ``video``-like objects with other words: a
gateway's ``unknown`` status, ``"30%"`` progress, millisecond timestamps, ``{code, message,
data}`` errors, vLLM's integer error codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ProxyError
from ..streaming import parse_object
from .base import JobState
from .statuses import normalize_progress, normalize_status, normalize_timestamp

#: ``video`` fields copied as they are when an upstream gives them.
_COPIED = ("model", "prompt", "size", "seconds", "remixed_from_video_id")
#: HTTP statuses whose errors are the caller's to fix, as OpenAI's ``type`` says.
_CALLER_ERRORS = range(400, 500)


def job_from_object(
    answer: Mapping[str, Any], *, result_urls: Iterable[str] = (), polling_url: str | None = None
) -> JobState:
    """A :class:`JobState` from a ``video``-like object, every field in OpenAI's terms."""
    status, failure_code = normalize_status(answer.get("status"))
    video: dict[str, Any] = {
        "object": "video",
        "status": status,
        "progress": normalize_progress(answer.get("progress"), status),
        "created_at": normalize_timestamp(answer.get("created_at")),
        "completed_at": normalize_timestamp(answer.get("completed_at")),
        "expires_at": normalize_timestamp(answer.get("expires_at")),
    }
    video.update({name: answer[name] for name in _COPIED if answer.get(name) is not None})
    if isinstance(video.get("seconds"), int | float) and not isinstance(video["seconds"], bool):
        video["seconds"] = str(int(video["seconds"]))
    video["error"] = _job_error(answer.get("error"), status, failure_code)
    upstream_id = answer.get("id") or answer.get("task_id")
    return JobState(
        upstream_id=str(upstream_id or ""),
        video=video,
        result_urls=tuple(url for url in result_urls if isinstance(url, str) and url),
        polling_url=polling_url,
    )


def _job_error(error: Any, status: str, failure_code: str | None) -> dict[str, str] | None:
    if status != "failed":
        return None
    message = "The upstream reported that the generation failed."
    code = failure_code or "upstream_error"
    if isinstance(error, Mapping):
        message = str(error.get("message") or message)
        upstream_code = error.get("code")
        # An HTTP status as a code (vLLM's 500, LiteLLM's "400") says nothing a caller can use.
        if isinstance(upstream_code, str) and upstream_code and not upstream_code.isdigit():
            code = upstream_code if failure_code in (None, "upstream_error") else code
    elif isinstance(error, str) and error:
        message = error
    return {"code": code, "message": message}


def error_from_body(status: int, body: bytes, *, not_found_codes: Iterable[str] = ()) -> ProxyError:
    """An upstream's error answer as the OpenAI envelope, whatever shape it came in.

    :param not_found_codes: codes that mean "no such job" (new-api's ``task_not_exist``,
        answered 400): they become 404 ``video_not_found``.
    """
    answer = parse_object(body) or {}
    inner = answer.get("error")
    if isinstance(inner, Mapping):
        message, code, param = inner.get("message"), inner.get("code"), inner.get("param")
    else:  # new-api's {code, message, data}, FastAPI's {detail}, vLLM's {"error": "..."}
        message = answer.get("message") or answer.get("detail") or inner
        code, param = answer.get("code"), None
    if not isinstance(code, str) or not code or code.isdigit():
        code = None
    if code in set(not_found_codes):
        return ProxyError(
            str(message or "Video not found."),
            code="video_not_found",
            status=404,
            error_type="invalid_request_error",
        )
    text = str(message) if message else f"The upstream answered HTTP {status}."
    return ProxyError(
        text,
        code=code or ("upstream_error" if status >= 500 else None),
        param=param if isinstance(param, str) else None,
        status=status if 400 <= status <= 599 else 502,
        error_type="invalid_request_error" if status in _CALLER_ERRORS else "server_error",
    )
