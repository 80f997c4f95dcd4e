"""OpenRouter's error answers: ``{"error": {"code": <int HTTP status>, "message", "metadata"}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Response, jsonify


class OpenRouterError(Exception):
    """An error answered in OpenRouter's envelope; ``code`` is the HTTP status as an integer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.metadata = dict(metadata) if metadata is not None else None
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """This error as a Flask response."""
        error = {"code": self.status, "message": self.message, "metadata": self.metadata}
        response = jsonify(error=error, user_id=None)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


def render_openrouter_error(error: OpenRouterError) -> Response:
    """Flask error handler for :class:`OpenRouterError`."""
    return error.response()
