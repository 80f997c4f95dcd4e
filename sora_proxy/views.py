"""The route handlers: each authenticates, validates, and relays; the work lives elsewhere."""

from __future__ import annotations

import json
from typing import Any

from flask import Response, current_app, request

from .auth import Caller
from .bodies import media_type, read_form_body, read_json_object
from .errors import InvalidRequest, UnsupportedMediaType
from .fetch import open_url
from .plan import fetch_policy, form_text, plan_create
from .schemas import (
    CharacterSchema,
    ContentQuerySchema,
    EditSchema,
    ExtendSchema,
    ListQuerySchema,
    RemixSchema,
    SoraCharacterSchema,
    check_id,
    load_or_raise,
)
from .settings import MIB
from .uploads import StreamedUpload, multipart_stream, sniff_video_type
from .upstream import FORWARDED_REQUEST_HEADERS, relay_response

EXTENSION_KEY = "sora_proxy"
#: Cap on small JSON bodies (remix, edits by id): a 32000-character prompt and some slack.
SMALL_BODY_BYTES = MIB


def _state() -> Any:
    return current_app.extensions[EXTENSION_KEY]


def _forwarded_headers() -> dict[str, str]:
    headers = request.headers
    return {name: headers[name] for name in FORWARDED_REQUEST_HEADERS if name in headers}


def _caller() -> Caller:
    return _state().authenticator.authenticate(request)


def _relay(
    method: str,
    path: str,
    caller: Caller,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
) -> Response:
    headers = _forwarded_headers()
    if content_type:
        headers["Content-Type"] = content_type
    upstream = _state().upstream.send(
        method,
        path,
        headers=headers,
        params={key: str(value) for key, value in (params or {}).items()},
        body=body,
        caller_authorization=caller.upstream_authorization,
    )
    return relay_response(upstream, method=method)


def _json(data: dict[str, Any]) -> tuple[bytes, str]:
    return json.dumps(data).encode("utf-8"), "application/json"


def create_video() -> Response:
    """``POST /v1/videos``: validate, infer size, rewrite the reference, relay."""
    caller = _caller()
    settings = _state().settings
    body = read_form_body(request, max_bytes=settings.create_body_limit)
    planned = plan_create(body, settings)
    return _relay(
        "POST", "/videos", caller, body=planned.content, content_type=planned.content_type
    )


def list_videos() -> Response:
    """``GET /v1/videos``."""
    caller = _caller()
    query = load_or_raise(ListQuerySchema(), request.args.to_dict())
    return _relay("GET", "/videos", caller, params=query)


def retrieve_video(video_id: str) -> Response:
    """``GET /v1/videos/{video_id}``."""
    caller = _caller()
    return _relay("GET", f"/videos/{check_id(video_id, 'video_id')}", caller)


def delete_video(video_id: str) -> Response:
    """``DELETE /v1/videos/{video_id}`` (the SDK's empty JSON body is ignored)."""
    caller = _caller()
    return _relay("DELETE", f"/videos/{check_id(video_id, 'video_id')}", caller)


def video_content(video_id: str) -> Response:
    """``GET|HEAD /v1/videos/{video_id}/content``: streamed, Range and conditionals relayed."""
    caller = _caller()
    query = load_or_raise(ContentQuerySchema(), request.args.to_dict())
    path = f"/videos/{check_id(video_id, 'video_id')}/content"
    return _relay(request.method, path, caller, params=query)


def remix_video(video_id: str) -> Response:
    """``POST /v1/videos/{video_id}/remix``: JSON or multipart ``{prompt}``, sent as JSON."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}/remix"
    body = read_form_body(request, max_bytes=SMALL_BODY_BYTES)
    if body.files:
        raise InvalidRequest("remix takes no file parts.", param=next(iter(body.files)))
    fields = load_or_raise(RemixSchema(), body.fields)
    content, content_type = _json(fields)
    return _relay("POST", path, caller, body=content, content_type=content_type)


def edit_video() -> Response:
    """``POST /v1/videos/edits``: a ``video`` file streamed through, or ``{"id"}``."""
    return _video_job("/videos/edits", EditSchema)


def extend_video() -> Response:
    """``POST /v1/videos/extensions``: like edits, plus ``seconds``."""
    return _video_job("/videos/extensions", ExtendSchema)


def _video_job(path: str, schema: type) -> Response:
    caller = _caller()
    settings = _state().settings
    kind = media_type(request)
    if kind == "application/json":
        fields = load_or_raise(schema(), read_json_object(request, max_bytes=SMALL_BODY_BYTES))
        if "video" not in fields:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")
        content, content_type = _json(fields)
        return _relay("POST", path, caller, body=content, content_type=content_type)
    upload = _streamed_upload(settings.max_video_bytes)
    head = upload.read_head()

    def check(fields: dict[str, Any], *, partial: bool = False) -> None:
        checked = load_or_raise(schema(partial=partial), fields)
        has_id = "video" in checked
        if head.file_name is not None and has_id:
            raise InvalidRequest("Send 'video' as a file or as {id}, not both.", param="video")
        if not partial and head.file_name is None and not has_id:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")

    check(head.fields, partial=not head.complete)
    body = upload.body(check)
    return _relay("POST", path, caller, body=body, content_type=upload.content_type)


def create_character() -> Response:
    """``POST /v1/videos/characters``: multipart ``video`` file and ``name``, streamed."""
    caller = _caller()
    upload = _streamed_upload(_state().settings.max_video_bytes)
    head = upload.read_head()
    if head.complete and head.file_name is None:
        raise InvalidRequest("Missing required parameter: 'video' (a video file).", param="video")
    load_or_raise(CharacterSchema(partial=True), head.fields)

    def check(fields: dict[str, Any]) -> None:
        load_or_raise(CharacterSchema(), fields)
        if head.file_name is None:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")

    return _relay(
        "POST", "/videos/characters", caller, body=upload.body(check),
        content_type=upload.content_type,
    )


def get_character(character_id: str) -> Response:
    """``GET /v1/videos/characters/{character_id}``."""
    caller = _caller()
    return _relay("GET", f"/videos/characters/{check_id(character_id, 'character_id')}", caller)


def create_character_from_url() -> Response:
    """The seed's ``POST /sora/v1/characters``: fetch ``character_url``, upload it as a file."""
    caller = _caller()
    settings = _state().settings
    body = read_json_object(request, max_bytes=SMALL_BODY_BYTES)
    fields = load_or_raise(SoraCharacterSchema(), body)
    start, end = fields.pop("character_timestamps")
    url = fields.pop("character_url")
    text = [("name", fields.pop("name")), ("character_timestamps", f"{start:g},{end:g}")]
    text += [(name, form_text(value)) for name, value in fields.items()]
    with open_url(url, fetch_policy(settings, video=True), param="character_url") as fetched:
        chunks = fetched.iter_chunks(1024 * 1024)
        first = next(chunks, b"")
        video_type = sniff_video_type(first)
        if video_type is None:
            raise InvalidRequest(
                "character_url does not point at an MP4, QuickTime or WebM video.",
                param="character_url",
                code="invalid_video",
            )
        extension = {"video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm"}[video_type]

        def file_chunks() -> Any:
            yield first
            yield from chunks

        body, content_type = multipart_stream(
            text, "video", f"character.{extension}", video_type, file_chunks(),
            fetched.content_length,
        )
        return _relay("POST", "/videos/characters", caller, body=body, content_type=content_type)


def _streamed_upload(max_bytes: int) -> StreamedUpload:
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type '{media_type(request) or 'none'}' is not supported here; send "
            "multipart/form-data with a 'video' file part."
        )
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise InvalidRequest(
            "The multipart Content-Type has no boundary.", code="invalid_multipart"
        )
    return StreamedUpload(
        request.stream,
        request.headers["Content-Type"],
        boundary,
        request.content_length,
        max_bytes=max_bytes,
    )
