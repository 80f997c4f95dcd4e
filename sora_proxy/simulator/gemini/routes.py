"""The ``/v1beta`` routes: ``predictLongRunning``, the operation, and the file download.

The create body is checked as strictly as ``gemini.md`` allows: exactly one instance, an image
only as ``{bytesBase64Encoded, mimeType}``, ``durationSeconds`` a JSON integer the model makes
(a string ``"8"`` is refused), ``aspectRatio`` and ``resolution`` the model's, and no field the
API does not have.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from flask import Blueprint, Response, current_app, request

from .. import media
from ..content import byte_range
from ..state import SimulatorState
from ..validation import SimError
from .errors import RETRY_INFO, GoogleError, invalid, unknown_field
from .models import MODELS, VeoModel
from .operations import RATE_LIMIT_MARKER, RETRY_DELAY_SECONDS, is_finished, new_operation, render

bp = Blueprint("gemini", __name__, url_prefix="/v1beta")

_INSTANCE_FIELDS = ("prompt", "image", "lastFrame", "referenceImages", "video")
_PARAMETER_FIELDS = (
    "sampleCount", "durationSeconds", "aspectRatio", "resolution", "personGeneration",
    "negativePrompt", "enhancePrompt",
)  # fmt: skip
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
_PERSON_GENERATION = ("dont_allow", "allow_adult", "allow_all")


def _state() -> SimulatorState:
    state: SimulatorState = current_app.extensions["sora_simulator"]
    return state


@bp.post("/models/<model>:predictLongRunning")
def predict_long_running(model: str) -> Response:
    """Start an operation and answer ``{"name": ...}`` alone."""
    veo = MODELS.get(model)
    if veo is None:
        raise GoogleError(
            "NOT_FOUND",
            f"models/{model} is not found for API version v1beta, or is not supported for "
            "predictLongRunning. Call ListModels to see the list of available models and "
            "their supported methods.",
        )
    try:
        body = json.loads(request.get_data() or b"null")
    except ValueError:
        raise invalid("Invalid JSON payload received.") from None
    if not isinstance(body, dict):
        raise invalid("Invalid JSON payload received. Expected an object.")
    prompt, sample_count = _check_body(body, veo)
    if RATE_LIMIT_MARKER in prompt:
        retry = {"@type": RETRY_INFO, "retryDelay": f"{RETRY_DELAY_SECONDS}s"}
        raise GoogleError(
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            details=[retry],
        )
    operation = new_operation(model, prompt, sample_count)
    _state().add_video(operation)
    return _json({"name": operation["name"]})


@bp.get("/models/<model>/operations/<operation_id>")
def get_operation(model: str, operation_id: str) -> Response:
    """The operation; ``done`` absent while it runs."""
    operation = _state().get_video(f"models/{model}/operations/{operation_id}")
    if operation is None:
        raise GoogleError("NOT_FOUND", f"Operation models/{model}/operations/{operation_id} "
                          "not found.")  # fmt: skip
    return _json(render(operation, _state().seconds_per_step))


@bp.get("/files/<file_id>:download")
def download(file_id: str) -> Response:
    """A generated sample's MP4 (``alt=media``), one ``Range`` honoured."""
    if request.args.get("alt") != "media":
        raise invalid("Only alt=media is supported for files:download.")
    state = _state()
    operations = state.list_videos()
    owner = next((op for op in operations if file_id in op.get("_files", ())), None)
    if owner is None or not is_finished(owner, state.seconds_per_step):
        raise GoogleError("NOT_FOUND", f"File files/{file_id} not found.")
    data, content_type, _ = media.load("video")
    try:
        span = byte_range(request.headers.get("Range"), len(data))
    except SimError as error:
        raise GoogleError("INVALID_ARGUMENT", "Requested range not satisfiable.") from error
    start, end = span or (0, len(data))
    response = Response(data[start:end], status=206 if span else 200, mimetype=content_type)
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
    return response


def _check_body(body: dict[str, Any], veo: VeoModel) -> tuple[str, int]:
    """The prompt and sample count of a valid create body, or the 400."""
    for name in body:
        if name not in ("instances", "parameters", "webhookConfig"):
            raise unknown_field(name)
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise invalid("instances must hold exactly one instance.")
    instance: dict[str, Any] = instances[0]
    for name in instance:
        if name not in _INSTANCE_FIELDS:
            raise unknown_field(f"instances[0].{name}")
    prompt = instance.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise invalid("instances[0].prompt must be a string.")
    if not prompt and "image" not in instance and "video" not in instance:
        raise invalid("A prompt, an image or a video is required.")
    for name in ("image", "lastFrame"):
        if name in instance:
            _check_image(instance[name], f"instances[0].{name}")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise invalid("parameters must be an object.")
    for name in parameters:
        if name not in _PARAMETER_FIELDS:
            raise unknown_field(f"parameters.{name}")
    _check_parameters(parameters, veo)
    return prompt or "", int(parameters.get("sampleCount", 1))


def _check_image(image: Any, where: str) -> None:
    if not isinstance(image, dict) or set(image) != {"bytesBase64Encoded", "mimeType"}:
        raise invalid(f"{where} must be {{bytesBase64Encoded, mimeType}}.")
    if image["mimeType"] not in _IMAGE_TYPES:
        raise invalid(f"{where}.mimeType {image['mimeType']!r} is not supported.")
    try:
        base64.b64decode(str(image["bytesBase64Encoded"]), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{where}.bytesBase64Encoded is not valid base64.") from None


def _check_parameters(parameters: dict[str, Any], veo: VeoModel) -> None:
    duration = parameters.get("durationSeconds")
    if duration is not None and (type(duration) is not int or duration not in veo.durations):
        allowed = ", ".join(str(d) for d in veo.durations)
        raise invalid(f"durationSeconds {duration!r} is out of bound; allowed: {allowed}.")
    count = parameters.get("sampleCount", 1)
    if type(count) is not int or not 1 <= count <= 4:
        raise invalid(f"sampleCount {count!r} must be an integer from 1 to 4.")
    for name, allowed_values in (
        ("aspectRatio", veo.aspect_ratios),
        ("resolution", veo.resolutions),
        ("personGeneration", _PERSON_GENERATION),
    ):
        value = parameters.get(name)
        if value is not None and value not in allowed_values:
            raise invalid(f"{name} {value!r} is not supported; use one of {allowed_values}.")
    for name in ("negativePrompt",):
        if name in parameters and not isinstance(parameters[name], str):
            raise invalid(f"{name} must be a string.")
    if "enhancePrompt" in parameters and not isinstance(parameters["enhancePrompt"], bool):
        raise invalid("enhancePrompt must be a boolean.")


def _json(data: dict[str, Any]) -> Response:
    return Response(json.dumps(data, indent=2), mimetype="application/json")
