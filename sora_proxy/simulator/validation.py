"""The create endpoint's rules, enforced as strictly as the real upstream enforces them.

Messages for the cases seen in the wild (wrong ``input_reference`` form, reference size
mismatch, integer ``seconds``) are copied word for word from ``UPSTREAM.md``; the others follow
the OpenAI wording style, and their ``code`` values are best guesses.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app
from PIL import Image
from werkzeug.datastructures import FileStorage, MultiDict

MODELS = ("sora-2", "sora-2-pro", "sora-2-2025-10-06", "sora-2-pro-2025-10-06", "sora-2-2025-12-08")
SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")
#: What the non-pro models accept; the pro models take every size in :data:`SIZES`.
STANDARD_SIZES = SIZES[:2]
SECONDS = ("4", "8", "12")
MAX_PROMPT = 32000
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


class SimError(Exception):
    """An error the simulator answers with the OpenAI envelope (plus ``headers``, if any)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = dict(headers or {})
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type

    def envelope(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class CreateRequest:
    """A create body that passed every check."""

    prompt: str
    model: str
    size: str
    seconds: str


def kind(value: object) -> str:
    """Name a JSON value's type the way OpenAI's messages do (``"an integer"``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, got: str) -> SimError:
    """The 400 for a parameter of the wrong type (``expected``/``got`` as "a string")."""
    message = f"Invalid type for '{param}': expected {expected}, but got {got} instead."
    return SimError(400, message, param=param, code="invalid_type")


def choice(param: str, value: str, allowed: tuple[str, ...], context: str = "") -> str:
    """Return ``value`` if it is one of ``allowed``, else raise the 400 naming the options."""
    if value not in allowed:
        options = ", ".join(f"'{item}'" for item in allowed)
        message = f"Invalid value: '{value}'. Supported values{context} are: {options}."
        raise SimError(400, message, param=param, code="invalid_value")
    return value


def _text(fields: Mapping[str, object], name: str, default: str) -> str:
    value = fields.get(name)
    return default if value is None else str(value)


def missing_parameter(param: str) -> SimError:
    """The 400 for a required parameter that was not sent."""
    message = f"Missing required parameter: '{param}'."
    return SimError(400, message, param=param, code="missing_required_parameter")


def check_length(param: str, value: object, minimum: int, maximum: int) -> str:
    """Return ``value`` if it is a string of ``minimum``..``maximum`` characters, else raise."""
    if value is None:
        raise missing_parameter(param)
    if not isinstance(value, str):
        raise invalid_type(param, "a string", kind(value))
    if len(value) < minimum:
        got = "an empty string" if not value else f"a string with length {len(value)}"
        message = (
            f"Invalid '{param}': string too short. Expected a string with minimum length "
            f"{minimum}, but got {got} instead."
        )
        raise SimError(400, message, param=param, code="string_below_min_length")
    if len(value) > maximum:
        message = (
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{maximum}, but got a string with length {len(value)} instead."
        )
        raise SimError(400, message, param=param, code="string_above_max_length")
    return value


def check_prompt(value: object) -> str:
    """Return a valid ``prompt`` (a string of 1..32000 characters), else raise the 400."""
    return check_length("prompt", value, 1, MAX_PROMPT)


def check_seconds(value: object) -> str:
    """Return a valid required ``seconds`` (a string of :data:`SECONDS`), else raise the 400."""
    if value is None:
        raise missing_parameter("seconds")
    if not isinstance(value, str):
        raise invalid_type("seconds", "a string", kind(value))
    return choice("seconds", value, SECONDS)


def _check_fields(fields: Mapping[str, object]) -> CreateRequest:
    """Check the scalar fields once each is known to be a string (or absent)."""
    prompt = check_prompt(fields.get("prompt"))
    for name in ("model", "size", "seconds"):
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise invalid_type(name, "a string", kind(value))
    deployments: dict[str, str] = current_app.config.get("SORA_SIMULATOR_DEPLOYMENTS", {})
    model = choice("model", _text(fields, "model", MODELS[0]), MODELS + tuple(deployments))
    size = choice("size", _text(fields, "size", SIZES[0]), SIZES)
    if "pro" not in deployments.get(model, model):
        choice("size", size, STANDARD_SIZES, f" for model '{model}'")
    seconds = choice("seconds", _text(fields, "seconds", SECONDS[0]), SECONDS)
    return CreateRequest(prompt=prompt, model=model, size=size, seconds=seconds)


def check_image(data: bytes, size: str) -> None:
    """Require ``data`` to be a PNG/JPEG/WebP image whose pixel size is exactly ``size``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            width, height = image.size
            image.verify()
    except Exception as exc:
        raise SimError(
            400,
            "Invalid 'input_reference': the file is not a valid image. "
            "Supported formats are JPEG, PNG and WebP.",
            param="input_reference",
            code="invalid_image",
        ) from exc
    if image_format not in IMAGE_FORMATS:
        raise SimError(
            400,
            f"Invalid 'input_reference': unsupported image format {image_format}. "
            "Supported formats are JPEG, PNG and WebP.",
            param="input_reference",
            code="invalid_image_format",
        )
    if f"{width}x{height}" != size:
        raise SimError(
            400,
            "Inpaint image must match the requested width and height",
            param="input_reference",
            code="invalid_value",
        )


def check_multipart(form: MultiDict[str, str], files: MultiDict[str, FileStorage]) -> CreateRequest:
    """Validate a multipart (or urlencoded) create; unknown parts are ignored."""
    fields: dict[str, object] = {}
    for name in ("prompt", "model", "size", "seconds"):
        if name in form:
            fields[name] = form[name]
        elif name in files:
            raise invalid_type(name, "a string", "a file")
    request = _check_fields(fields)
    if "input_reference" in form and "input_reference" not in files:
        raise invalid_type("input_reference", "a file", "a string")
    if "input_reference" in files:
        check_image(files["input_reference"].read(), request.size)
    return request


def check_json(body: object) -> CreateRequest:
    """Validate a JSON create; unknown keys are ignored."""
    if not isinstance(body, dict):
        message = f"Invalid type for body: expected an object, but got {kind(body)} instead."
        raise SimError(400, message, param=None, code="invalid_type")
    request = _check_fields(body)
    if "input_reference" in body and body["input_reference"] is not None:
        _check_json_reference(body["input_reference"], request.size)
    return request


def _check_json_reference(reference: object, size: str) -> None:
    if not isinstance(reference, dict):
        raise invalid_type("input_reference", "an object", kind(reference))
    present = [key for key in ("image_url", "file_id") if reference.get(key) is not None]
    if len(present) != 1:
        message = "Invalid 'input_reference': expected exactly one of 'image_url' or 'file_id'."
        raise SimError(400, message, param="input_reference", code="invalid_value")
    key = present[0]
    value = reference[key]
    param = f"input_reference.{key}"
    if not isinstance(value, str):
        raise invalid_type(param, "a string", kind(value))
    if key == "file_id" or value.startswith("https://"):
        return  # accepted as is: the simulator never fetches anything
    if not value.startswith("data:") or ";base64," not in value:
        message = f"Invalid '{param}': expected an https URL or a base64 data URL."
        raise SimError(400, message, param=param, code="invalid_value")
    try:
        data = base64.b64decode(value.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError) as exc:
        message = f"Invalid '{param}': the data URL is not valid base64."
        raise SimError(400, message, param=param, code="invalid_value") from exc
    check_image(data, size)
