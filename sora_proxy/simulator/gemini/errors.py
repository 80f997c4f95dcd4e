"""Google's error answers: ``{"error": {"code": <http>, "message", "status", "details"?}}``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import Response

#: HTTP status of each canonical status name the simulator answers.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
}
#: The ``@type`` of an ``ErrorInfo`` and a ``RetryInfo`` in ``details``.
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class GoogleError(Exception):
    """An error answered in Google's envelope.

    :param status: the canonical status name (``INVALID_ARGUMENT``...); it sets the HTTP code.
    :param details: ``google.rpc`` detail messages (``ErrorInfo``, ``RetryInfo``).
    """

    def __init__(
        self,
        status: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    @property
    def http_status(self) -> int:
        """The HTTP status code."""
        return HTTP_STATUS[self.status]

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        error: dict[str, Any] = {
            "code": self.http_status,
            "message": self.message,
            "status": self.status,
        }
        if self.details:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> Response:
        """This error as a Flask response (Google's pretty-printed JSON)."""
        payload = json.dumps(self.body(), indent=2)
        response = Response(payload, status=self.http_status, headers=self.headers)
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        return response


def invalid(message: str) -> GoogleError:
    """A 400 ``INVALID_ARGUMENT``."""
    return GoogleError("INVALID_ARGUMENT", message)


def unknown_field(name: str) -> GoogleError:
    """The 400 Google's JSON parser answers for a field the message does not have."""
    return invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
