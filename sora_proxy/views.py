"""The route handlers: each authenticates, validates, finds its upstream, and relays.

In pass-through and anonymous modes answers stream straight back. When a store keeps records
(callers identified, or several upstreams), answers that create something are read (they are
small JSON) to record who owns it and where, by-id calls check that record first, and POSTs
may carry an ``Idempotency-Key``. The sending itself lives in :mod:`sora_proxy.exchange`.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import ExitStack
from typing import Any

import requests
from flask import Response, request

from . import idempotency
from .auth import Caller
from .bodies import ClientStream, FormBody, media_type, read_form_body, read_json_object
from .errors import InvalidRequest, NotFound, UnsupportedMediaType
from .exchange import (
    answer,
    authenticate,
    default_upstream,
    is_owned,
    note_prompt,
    note_upstream,
    owner_name,
    present_model,
    proxy_state,
    relay,
    send,
    upstream_headers,
    upstream_of,
)
from .fetch import open_url
from .paid import dispatch_to, post
from .plan import CreatePlan, fetch_policy, form_text, load_create, plan_create
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
from .sizing import DEFAULT_MODEL
from .streaming import read_answer
from .uploads import StreamedUpload, checked_video_chunks, multipart_stream, sniff_video_type
from .upstreams import Upstream

#: Cap on small JSON bodies (remix, edits by id): a 32000-character prompt and some slack.
SMALL_BODY_BYTES = MIB
_VIDEO_EXTENSIONS = {"video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm"}


def _json_body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode("utf-8")


def _file_digests(body: FormBody) -> dict[str, str]:
    digests = {}
    for name, upload in body.files.items():
        digests[name] = hashlib.sha256(upload.stream.read()).hexdigest()
        upload.stream.seek(0)
    return digests


def create_video() -> Response:
    """``POST /v1/videos``: validate, infer size, rewrite the reference, route by model."""
    caller = authenticate()
    state = proxy_state()
    body = read_form_body(request, max_bytes=state.settings.create_body_limit)
    params = load_create(body)
    note_prompt(params)
    plan = plan_create(body, params, state.settings, state.upstream.catalog)
    _require_referenced(caller, params, plan)
    candidates = state.upstream.catalog.candidates(plan.model, plan.size, plan.seconds)

    def dispatch(_: ExitStack, key: str | None) -> tuple[Upstream, requests.Response]:
        started = time.perf_counter()
        upstream, response = state.upstream.send_first(
            candidates, "POST", "/videos", lambda u: _encoded(plan, u),
            headers=upstream_headers(key), caller_authorization=caller.upstream_authorization,
        )
        note_upstream(upstream, started)
        return upstream, response

    def fingerprint() -> str:
        return idempotency.fingerprint("create", params, _file_digests(body))

    return post("/videos", caller, "video", fingerprint, dispatch,
                caller_model=params.get("model") or DEFAULT_MODEL)


def _require_referenced(
    caller: Caller, fields: dict[str, Any], plan: CreatePlan | None = None
) -> None:
    """Ids a body names besides the route's own (characters, a file) must be the caller's."""
    ownership = proxy_state().ownership
    if ownership is None:
        return
    ownership.require_referenced(owner_name(caller), fields)
    if plan is not None and plan.file_id is not None:
        # Files cannot be uploaded through the proxy, so none on the shared account is the
        # caller's: the same 404 as for an id that does not exist.
        raise NotFound(
            f"File with id '{plan.file_id}' not found.",
            param="input_reference.file_id", code="file_not_found",
        )


def _encoded(plan: CreatePlan, upstream: Upstream) -> tuple[bytes, str]:
    encoded = plan.encode(upstream)
    return encoded.content, encoded.content_type


def list_videos() -> Response:
    """``GET /v1/videos``: the caller's own videos when a store keeps them."""
    caller = authenticate()
    query = load_or_raise(ListQuerySchema(), request.args.to_dict())
    if is_owned():
        page = proxy_state().ownership.list_page(owner_name(caller), query)
        return Response(json.dumps(page), mimetype="application/json")
    upstream = next(iter(proxy_state().upstream.catalog.upstreams.values()))
    return relay(upstream, "GET", "/videos", caller, params=query)


def retrieve_video(video_id: str) -> Response:
    """``GET /v1/videos/{video_id}``, from the upstream that holds it."""
    caller = authenticate()
    path = f"/videos/{check_id(video_id, 'video_id')}"
    upstream = upstream_of(caller, video_id, "video")
    if not is_owned():
        return relay(upstream, "GET", path, caller)
    status, headers, data = read_answer(send(upstream, "GET", path, caller), method="GET")
    data = present_model(upstream, data)
    if status == 200:
        proxy_state().ownership.refresh(video_id, data)  # a cache write: never fails the read
    return answer(status, headers, data)


def delete_video(video_id: str) -> Response:
    """``DELETE /v1/videos/{video_id}`` (the SDK's empty JSON body is ignored)."""
    caller = authenticate()
    path = f"/videos/{check_id(video_id, 'video_id')}"
    upstream = upstream_of(caller, video_id, "video")
    if not is_owned():
        return relay(upstream, "DELETE", path, caller)
    status, headers, data = read_answer(send(upstream, "DELETE", path, caller), method="DELETE")
    if 200 <= status < 300:
        proxy_state().ownership.store.forget(video_id)
    return answer(status, headers, data)


def video_content(video_id: str) -> Response:
    """``GET|HEAD /v1/videos/{video_id}/content``: streamed, Range and conditionals relayed."""
    caller = authenticate()
    query = load_or_raise(ContentQuerySchema(), request.args.to_dict())
    path = f"/videos/{check_id(video_id, 'video_id')}/content"
    upstream = upstream_of(caller, video_id, "video")
    return relay(upstream, request.method, path, caller, params=query)


def remix_video(video_id: str) -> Response:
    """``POST /v1/videos/{video_id}/remix``: JSON or multipart ``{prompt}``, sent as JSON."""
    caller = authenticate()
    path = f"/videos/{check_id(video_id, 'video_id')}/remix"
    body = read_form_body(request, max_bytes=SMALL_BODY_BYTES)
    if body.files:
        raise InvalidRequest("remix takes no file parts.", param=next(iter(body.files)))
    fields = load_or_raise(RemixSchema(), body.fields)
    note_prompt(fields)
    upstream = upstream_of(caller, video_id, "video")
    _require_referenced(caller, fields)
    return post(path, caller, "video", lambda: idempotency.fingerprint(f"remix/{video_id}", fields),
                dispatch_to(upstream, path, caller, _json_body(fields), "application/json"))


def edit_video() -> Response:
    """``POST /v1/videos/edits``: a ``video`` file streamed through, or ``{"id"}``."""
    return _video_job("/videos/edits", EditSchema)


def extend_video() -> Response:
    """``POST /v1/videos/extensions``: like edits, plus ``seconds``."""
    return _video_job("/videos/extensions", ExtendSchema)


def _video_job(path: str, schema: type) -> Response:
    caller = authenticate()
    if media_type(request) == "application/json":
        fields = load_or_raise(schema(), read_json_object(request, max_bytes=SMALL_BODY_BYTES))
        note_prompt(fields)
        if "video" not in fields:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")
        upstream = upstream_of(caller, fields["video"]["id"], "video")
        _require_referenced(caller, fields)
        return post(path, caller, "video", lambda: idempotency.fingerprint(path, fields),
                    dispatch_to(upstream, path, caller, _json_body(fields), "application/json"))
    upload = _streamed_upload()
    head = upload.read_head()

    def check(fields: dict[str, Any], *, partial: bool = False) -> None:
        checked = load_or_raise(schema(partial=partial), fields)
        _require_referenced(caller, checked)
        has_id = "video" in checked
        if head.file_name is not None and has_id:
            raise InvalidRequest("Send 'video' as a file or as {id}, not both.", param="video")
        if not partial and head.file_name is None and not has_id:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")

    check(head.fields, partial=not head.complete)
    note_prompt(head.fields)
    video = head.fields.get("video")
    by_id = isinstance(video, dict) and isinstance(video.get("id"), str)
    upstream = upstream_of(caller, video["id"], "video") if by_id else default_upstream()
    return post(path, caller, "video", lambda: upload.fingerprint(path, head),
                dispatch_to(upstream, path, caller, upload.body(check), upload.content_type),
                upload=upload)


def create_character() -> Response:
    """``POST /v1/videos/characters``: multipart ``video`` file and ``name``, streamed."""
    caller = authenticate()
    upload = _streamed_upload()
    head = upload.read_head()
    if head.complete and head.file_name is None:
        raise InvalidRequest("Missing required parameter: 'video' (a video file).", param="video")
    load_or_raise(CharacterSchema(partial=True), head.fields)

    def check(fields: dict[str, Any]) -> None:
        load_or_raise(CharacterSchema(), fields)

    path = "/videos/characters"
    return post(path, caller, "character", lambda: upload.fingerprint(path, head),
                dispatch_to(default_upstream(), path, caller, upload.body(check),
                            upload.content_type),
                upload=upload)


def get_character(character_id: str) -> Response:
    """``GET /v1/videos/characters/{character_id}``."""
    caller = authenticate()
    path = f"/videos/characters/{check_id(character_id, 'character_id')}"
    return relay(upstream_of(caller, character_id, "character"), "GET", path, caller)


def create_character_from_url() -> Response:
    """The seed's ``POST /sora/v1/characters``: fetch ``character_url``, upload it as a file."""
    caller = authenticate()
    settings = proxy_state().settings
    body = read_json_object(request, max_bytes=SMALL_BODY_BYTES)
    fields = load_or_raise(SoraCharacterSchema(), body)
    start, end = fields.pop("character_timestamps")
    url = fields.pop("character_url")
    text = [("name", fields.pop("name")), ("character_timestamps", f"{start:g},{end:g}")]
    text += [(name, form_text(value)) for name, value in fields.items()]
    path = "/videos/characters"
    upstream = default_upstream()

    def dispatch(stack: ExitStack, key: str | None) -> tuple[Upstream, requests.Response]:
        policy = fetch_policy(settings, video=True)
        fetched = stack.enter_context(open_url(url, policy, param="character_url"))
        chunks = fetched.iter_chunks(MIB)
        first = next(chunks, b"")
        video_type = sniff_video_type(first)
        if video_type is None:
            raise InvalidRequest(
                "character_url does not point at an MP4, QuickTime or WebM video.",
                param="character_url",
                code="invalid_video",
            )
        # Walked as it streams; the last chunk waits until the whole file proved a video.
        file_chunks = checked_video_chunks(
            first, chunks, param="character_url",
            max_size=fetched.content_length or settings.max_video_bytes,
        )
        filename = f"character.{_VIDEO_EXTENSIONS[video_type]}"
        content, content_type = multipart_stream(
            text, "video", filename, video_type, file_chunks, fetched.content_length
        )
        # Sent while the fetch is open: the fetched body streams into the upstream request.
        return dispatch_to(upstream, path, caller, content, content_type)(stack, key)

    return post(path, caller, "character", lambda: idempotency.fingerprint("sora/characters", body),
                dispatch)


def models() -> Response:
    """``GET /v1/videos/models``: the offered models with their sizes and seconds."""
    authenticate()
    catalog = proxy_state().upstream.catalog
    data = [
        {"id": name, "object": "model", "sizes": list(route.sizes),
         "seconds": list(route.seconds)}
        for name, route in sorted(catalog.models.items())
    ]
    return Response(json.dumps({"object": "list", "data": data}), mimetype="application/json")


def _streamed_upload() -> StreamedUpload:
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
        ClientStream(request.stream, max_bytes=None),  # type: ignore[arg-type]
        request.headers["Content-Type"],
        boundary,
        request.content_length,
        max_bytes=proxy_state().settings.max_video_bytes,
    )
