"""marshmallow schemas for the bodies the proxy reads.

Schemas check types and domains only; decisions that need several fields at once (the size
to send, the reference image) belong to :mod:`sora_proxy.sizing` and :mod:`sora_proxy.plan`.
Unknown fields are kept (``unknown = INCLUDE``) so new upstream fields pass through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from .bodies import MAX_DEPTH, check_depth
from .errors import InvalidRequest
from .sizing import ALLOWED_SECONDS

_REQUIRED: dict[str, str | list[Any] | dict[Any, Any]] = {
    "required": "Missing required parameter.",
    "null": "May not be null.",
}


class SecondsField(fields.Field[str]):
    """``seconds`` as a string or an integer (``8`` or ``"8"``), always loaded as a string.

    :param allowed: the accepted values, or ``None`` when the upstream's model decides (create).
    """

    def __init__(self, *, allowed: tuple[str, ...] | None = ALLOWED_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed = allowed

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError("Must be a string or an integer such as '8'.")
        text = str(value).strip()
        if not text.isdigit() or (self.allowed is not None and text not in self.allowed):
            raise ValidationError(f"Must be one of {', '.join(self.allowed or ALLOWED_SECONDS)}.")
        return text


class JSONObjectField(fields.Field[dict[str, Any]]):
    """An object, or a string holding a JSON object (multipart bodies can only send text)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> dict[str, Any]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except RecursionError:
                raise ValidationError(f"Is nested more than {MAX_DEPTH} levels deep.") from None
            except ValueError:
                raise ValidationError("Must be an object or a JSON-encoded object.") from None
            try:
                check_depth(value, "It")
            except InvalidRequest as error:
                raise ValidationError(error.message) from None
        if not isinstance(value, dict):
            raise ValidationError("Must be an object or a JSON-encoded object.")
        return value


class OutputConfigSchema(Schema):
    """``metadata.output_config``: hints the proxy turns into a ``size``."""

    class Meta:
        unknown = INCLUDE

    aspect_ratio = fields.String(allow_none=True)
    resolution = fields.Raw(allow_none=True)
    audio_generation = fields.Raw(allow_none=True)


class CreateVideoSchema(Schema):
    """The body of ``POST /v1/videos`` (JSON, or multipart text parts)."""

    class Meta:
        unknown = INCLUDE

    prompt = fields.String(
        required=True,
        validate=validate.Length(min=1, max=32000, error="Must be 1 to 32000 characters."),
        error_messages=_REQUIRED,
    )
    # Which models, sizes and seconds exist depends on the upstreams (see plan_create).
    model = fields.String()
    size = fields.String()
    seconds = SecondsField(allowed=None)
    metadata = JSONObjectField(allow_none=True)
    input_reference = fields.Raw(allow_none=True)
    character_url = fields.String(allow_none=True)
    character_timestamps = fields.Raw(allow_none=True)


def load_or_raise(schema: Schema, data: Mapping[str, Any]) -> dict[str, Any]:
    """Load ``data`` with ``schema``; the first problem becomes an :class:`InvalidRequest`.

    The error names the field at fault in ``param`` with a dotted path
    (``metadata.output_config.aspect_ratio``).
    """
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as error:
        param, message = _first_error(error.messages)
        raise InvalidRequest(f"Invalid '{param}': {message}", param=param) from None
    return loaded


def load_output_config(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``metadata.output_config`` validated, or ``None`` when absent."""
    if not metadata or metadata.get("output_config") is None:
        return None
    raw = metadata["output_config"]
    if not isinstance(raw, Mapping):
        raise InvalidRequest(
            "Invalid 'metadata.output_config': Must be an object.",
            param="metadata.output_config",
        )
    try:
        config: dict[str, Any] = OutputConfigSchema().load(raw)
    except ValidationError as error:
        param, message = _first_error(error.messages)
        full = f"metadata.output_config.{param}"
        raise InvalidRequest(f"Invalid '{full}': {message}", param=full) from None
    return config


def _first_error(messages: Any, path: str = "") -> tuple[str, str]:
    if isinstance(messages, Mapping):
        key, value = next(iter(messages.items()))
        if key == "_schema":
            # marshmallow's key for "this value as a whole is wrong": the field is the path.
            return _first_error(value, path)
        return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(messages, list) and messages:
        return _first_error(messages[0], path)
    return path or "body", str(messages)


#: Ids the upstream hands out (``video_…``, ``char_…``): nothing that could change a URL path.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
_ID = validate.Regexp(ID_PATTERN, error="Must be an id of letters, digits, '_' or '-'.")
_PROMPT = validate.Length(min=1, max=32000, error="Must be 1 to 32000 characters.")


class ListQuerySchema(Schema):
    """Query of ``GET /v1/videos``."""

    class Meta:
        unknown = INCLUDE

    after = fields.String(validate=_ID)
    limit = fields.Integer(
        strict=False, validate=validate.Range(min=1, max=100, error="Must be 1 to 100.")
    )
    order = fields.String(validate=validate.OneOf(("asc", "desc"), error="Must be asc or desc."))


class ContentQuerySchema(Schema):
    """Query of ``GET|HEAD /v1/videos/{id}/content``."""

    class Meta:
        unknown = INCLUDE

    variant = fields.String(
        validate=validate.OneOf(
            ("video", "thumbnail", "spritesheet"), error="Must be video, thumbnail or spritesheet."
        )
    )


class RemixSchema(Schema):
    """Body of ``POST /v1/videos/{id}/remix``."""

    class Meta:
        unknown = INCLUDE

    prompt = fields.String(required=True, validate=_PROMPT, error_messages=_REQUIRED)


class VideoIdSchema(Schema):
    """``{"id": ...}``: a reference to a video the upstream already has."""

    # What a caller sees for `video` of the wrong type (a string, a list, nothing).
    error_messages = {"type": 'Must be a video file or an object {"id": "video_..."}.'}

    id = fields.String(required=True, validate=_ID, error_messages=_REQUIRED)


class EditSchema(Schema):
    """Text fields of ``POST /v1/videos/edits`` (``video`` is a file part or ``{id}``)."""

    class Meta:
        unknown = INCLUDE

    prompt = fields.String(required=True, validate=_PROMPT, error_messages=_REQUIRED)
    video = fields.Nested(VideoIdSchema)


class ExtendSchema(EditSchema):
    """Text fields of ``POST /v1/videos/extensions``."""

    seconds = SecondsField(required=True, error_messages=_REQUIRED)


class CharacterSchema(Schema):
    """Text fields of ``POST /v1/videos/characters`` (``video`` is the file part)."""

    class Meta:
        unknown = INCLUDE

    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=80, error="Must be 1 to 80 characters."),
        error_messages=_REQUIRED,
    )


class TimestampsField(fields.Field[tuple[float, float]]):
    """``"start,end"`` in seconds, with ``0 <= start < end``; loaded as ``(start, end)``."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[float, float]:
        parts = value.split(",") if isinstance(value, str) else value
        if not isinstance(parts, (list, tuple)) or len(parts) != 2:
            raise ValidationError("Must be 'start,end' in seconds, such as '1,3'.")
        try:
            start, end = (float(str(part).strip()) for part in parts)
        except ValueError:
            raise ValidationError("Must be 'start,end' in seconds, such as '1,3'.") from None
        if not (0 <= start < end) or end == float("inf"):
            raise ValidationError("Needs 0 <= start < end.")
        return start, end


class SoraCharacterSchema(CharacterSchema):
    """Body of the seed's ``POST /sora/v1/characters``."""

    character_url = fields.String(required=True, error_messages=_REQUIRED)
    character_timestamps = TimestampsField(required=True, error_messages=_REQUIRED)


def check_id(value: str, param: str) -> str:
    """Refuse an id that could be anything but one path segment at the upstream."""
    try:
        _ID(value)
    except ValidationError:
        raise InvalidRequest(f"Invalid '{param}': {_ID.error}", param=param) from None
    return value
