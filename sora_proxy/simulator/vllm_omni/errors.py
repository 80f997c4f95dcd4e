"""vLLM's error bodies: ``{"error": {"message", "type", "param", "code": <int>}}``.

Three families reach a client, and the simulator keeps them apart as vLLM does:

* ``HTTPException`` (most of vLLM-Omni's own refusals): ``type`` is the HTTP reason phrase
  (``"Bad Request"``), ``param`` null;
* request validation (FastAPI form coercion): 400, ``type`` ``"Bad Request"``, the message
  ``"N validation error(s):\\n  {...}"`` and ``param`` the first error's location
  (``"body.prompt"``);
* a ``ValueError`` (a pydantic range check on the request model) or an engine error: ``type``
  ``"BadRequestError"`` / ``"InternalServerError"``, from vLLM's ``create_error_response``.

The 401 of the auth middleware (``{"error": "Unauthorized"}``) and FastAPI's own route misses
(``{"detail": "Not Found"}``) are not errors of this shape; ``app.py`` renders them.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

#: One pydantic error entry, as FastAPI reports it (``type``, ``loc``, ``msg``, ``input``...).
ErrorEntry = dict[str, Any]


class VllmError(Exception):
    """An error answered with vLLM's envelope.

    :param status: the HTTP status, also the body's int ``code``.
    :param message: the ``message``.
    :param param: the ``param`` (only validation errors set it).
    :param error_type: the ``type``; the reason phrase of ``status`` by default.
    :param extra: more keys inside ``error`` (an engine error's ``request_id``...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        error_type: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_type = error_type or HTTPStatus(status).phrase
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of this error."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.status,
        }
        error.update(self.extra)
        return {"error": error}


def validation_error(errors: list[ErrorEntry]) -> VllmError:
    """The 400 vLLM's validation handler makes of FastAPI's request validation ``errors``."""
    label = "error" if len(errors) == 1 else "errors"
    message = f"{len(errors)} validation {label}:\n"
    message += "".join(f"  {entry}\n" for entry in errors[:10])
    if len(errors) > 10:
        message += f"  ...and {len(errors) - 10} more {label}\n"
    param = ".".join(str(part) for part in errors[0]["loc"])
    return VllmError(400, message.rstrip(), param=param)


def model_error(field: str, entry: ErrorEntry) -> VllmError:
    """The 400 a pydantic ``ValueError`` of the request model becomes in vLLM."""
    message = (
        f"1 validation error for VideoGenerationRequest\n{field}\n  {entry['msg']} "
        f"[type={entry['type']}, input_value={entry['input']!r}, "
        f"input_type={type(entry['input']).__name__}]"
    )
    return VllmError(400, message, error_type="BadRequestError")
