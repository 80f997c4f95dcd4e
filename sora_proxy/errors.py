"""One exception hierarchy for everything a caller can be told, rendered in one place.

Every error the proxy itself produces reaches the client as the OpenAI error envelope::

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

Views and helpers raise a :class:`ProxyError` subclass; the blueprint's error handlers turn it
(and any werkzeug ``HTTPException`` raised inside the blueprint) into that envelope. Messages
are written for the caller: they never carry keys, resolved addresses or stack traces.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response, json
from werkzeug.exceptions import HTTPException


class ConfigError(Exception):
    """A ``SORA_PROXY_*`` setting is missing or malformed; start-up must stop.

    ``str(err)`` is one line naming the key, fit to print as the only output of a failed start.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class ProxyError(Exception):
    """Base of every error answered to a caller.

    :param message: what went wrong, in words the caller can act on.
    :param param: the request field at fault, when there is one (``"size"``,
        ``"input_reference"``, ``"metadata.output_config.aspect_ratio"``).
    :param code: a short machine-readable code; defaults to the class's ``code``.
    :param headers: extra response headers (``x-should-retry``, ``retry-after``).
    :param status: overrides the class's HTTP status (for errors translated from elsewhere).
    :param error_type: overrides the class's envelope ``type``.
    """

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type
        self.headers: dict[str, str] = dict(headers or {})

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error envelope for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(ProxyError):
    """The request body, query or path is not acceptable (400)."""

    status = 400
    error_type = "invalid_request_error"


class ReferenceFetchFailed(InvalidRequest):
    """A URL the caller named could not be fetched, or may not be (400).

    :param reason: ``refused`` (not allowed: scheme, address), ``failed`` (network, status,
        timeout) or ``too_large``; a metrics label, never shown to the caller.
    """

    code = "invalid_reference_url"

    def __init__(self, message: str, *, param: str | None = None, reason: str = "failed") -> None:
        super().__init__(message, param=param)
        self.reason = reason


class UnsupportedByUpstream(InvalidRequest):
    """The upstream that would serve this request has no such operation (400), said before
    anything is sent."""

    code = "unsupported_by_upstream"

    def __init__(self, operation: str, upstream: str) -> None:
        super().__init__(f"The upstream '{upstream}' does not support {operation}.")


class Unauthorized(ProxyError):
    """The caller did not present a valid key (401)."""

    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(ProxyError):
    """The request carries a credential that does not grant it (403): a signed content URL
    that was tampered with, names another video or variant, or expired."""

    status = 403
    error_type = "invalid_request_error"
    code = "forbidden"


class NotFound(ProxyError):
    """No such resource for this caller (404)."""

    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(ProxyError):
    """The route exists but not with this method (405)."""

    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class Conflict(ProxyError):
    """The request conflicts with one already made (409)."""

    status = 409
    error_type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(ProxyError):
    """The body is larger than the proxy accepts (413)."""

    status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class TooManyRequests(ProxyError):
    """Over a rate, concurrency or stream limit (429 ``rate_limit_exceeded``, with a
    ``Retry-After``), or over a budget (429 ``insufficient_quota``, type ``insufficient_quota``,
    as OpenAI answers when the quota is spent). Nothing was sent upstream."""

    status = 429
    error_type = "requests"
    code = "rate_limit_exceeded"


class UnsupportedMediaType(ProxyError):
    """The body's Content-Type is not one the route reads (415)."""

    status = 415
    error_type = "invalid_request_error"
    code = "unsupported_media_type"


class UpstreamUnreachable(ProxyError):
    """The upstream could not be reached or broke the connection (502)."""

    status = 502
    error_type = "server_error"
    code = "upstream_unreachable"


class UpstreamAuthFailed(ProxyError):
    """The upstream refused the proxy's own key (502): the operator's problem, not the
    caller's, so nothing of the upstream's answer (which may quote the key) is relayed."""

    status = 502
    error_type = "server_error"
    code = "upstream_auth_failed"


class ServiceUnavailable(ProxyError):
    """A dependency of the proxy (its store) is down (503)."""

    status = 503
    error_type = "server_error"
    code = "service_unavailable"


class UpstreamTimeout(ProxyError):
    """The upstream did not answer in time (504)."""

    status = 504
    error_type = "server_error"
    code = "upstream_timeout"


def error_response(error: ProxyError) -> Response:
    """Render ``error`` as a JSON response in the OpenAI envelope."""
    response = Response(
        json.dumps(error.envelope()),
        status=error.status,
        mimetype="application/json",
    )
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def from_http_exception(error: HTTPException) -> ProxyError:
    """A werkzeug ``HTTPException`` (e.g. 413 from the form parser) as a :class:`ProxyError`."""
    status = error.code or 500
    if status == 413:
        return PayloadTooLarge(error.description or "The request body is too large.")
    return ProxyError(
        error.description or error.name,
        code=error.name.lower().replace(" ", "_"),
        status=status,
        error_type="invalid_request_error" if status < 500 else "server_error",
    )
