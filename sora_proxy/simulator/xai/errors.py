"""xAI's error answers: ``{"code": "<gRPC status text>", "error": "<message>"}``."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response, jsonify

#: gRPC status texts xAI puts in ``code``.
INVALID_ARGUMENT = "Client specified an invalid argument"
NOT_FOUND = "Some requested entity was not found"
INTERNAL = "Internal error"


class XaiError(Exception):
    """An error answered in xAI's envelope.

    :param code: the ``code`` value: a gRPC status text, or (as one 429 was seen) a number.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | int = INVALID_ARGUMENT,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """This error as a Flask response."""
        response = jsonify(code=self.code, error=self.message)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


def render_xai_error(error: XaiError) -> Response:
    """Flask error handler for :class:`XaiError`."""
    return error.response()


def wrong_key(presented: str) -> XaiError:
    """The 400 for a key xAI does not know, quoting its ends as xAI does (``xa***yz``)."""
    shown = f"{presented[:2]}***{presented[-2:]}" if len(presented) > 4 else "***"
    message = (
        f"Incorrect API key provided: {shown}. You can obtain an API key from https://console.x.ai."
    )
    return XaiError(400, message)
