"""The route handlers: each authenticates, validates, checks ownership, and relays.

In pass-through and anonymous modes answers stream straight back. When callers are
identified (keys or the host app's login), answers that create something are read (they are
small JSON) to record who owns it, by-id calls check that record first, and POSTs may carry an
``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import requests
from flask import Response, current_app, request

from . import idempotency
from .auth import Caller
from .bodies import FormBody, media_type, read_form_body, read_json_object
from .errors import InvalidRequest, UnsupportedMediaType, UpstreamTimeout, UpstreamUnreachable
from .fetch import open_url
from .observability import current_info
from .ownership import parse_object
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
from .store import Kind, StoredResponse
from .uploads import StreamedUpload, multipart_stream, sniff_video_type
from .upstream import (
    FORWARDED_REQUEST_HEADERS,
    RelayedResponse,
    read_answer,
    relay_response,
)
from .upstreams import Upstream

EXTENSION_KEY = "sora_proxy"
#: Cap on small JSON bodies (remix, edits by id): a 32000-character prompt and some slack.
SMALL_BODY_BYTES = MIB
_VIDEO_EXTENSIONS = {"video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm"}
Prepared = tuple[Any, str | None]


def _state() -> Any:
    return current_app.extensions[EXTENSION_KEY]


def _caller() -> Caller:
    caller = _state().authenticator.authenticate(request)
    info = current_info()
    if info is not None:
        info.caller = caller.name
    return caller


def _note_prompt(fields: dict[str, Any]) -> None:
    """Keep the prompt for the log line (written only with SORA_PROXY_LOG_PROMPTS)."""
    info = current_info()
    if info is not None and isinstance(fields.get("prompt"), str):
        info.prompt = fields["prompt"]


def _owned() -> bool:
    return _state().ownership is not None


def _owner(caller: Caller) -> str:
    """The name records are kept under (``anonymous`` when a store only routes by id)."""
    return caller.name or "anonymous"


def _headers(upstream_idempotency_key: str | None = None) -> dict[str, str]:
    headers = {
        name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers
    }
    if _owned():
        # The answer is read to record ownership, so it must arrive as-is (identity); and a
        # caller's own key must not collide with another caller's at the shared upstream.
        headers["Accept-Encoding"] = "identity"
        headers.pop("Idempotency-Key", None)
    if upstream_idempotency_key:
        headers["Idempotency-Key"] = upstream_idempotency_key
    info = current_info()
    if info is not None:
        headers["X-Request-ID"] = info.request_id
    return headers


def _timed(info_upstream: Upstream, started: float) -> None:
    info = current_info()
    if info is None:
        return
    info.upstream = info_upstream.name
    metrics = _state().metrics
    if metrics is not None:
        metrics.upstream_latency.labels(info.route, info.upstream).observe(
            time.perf_counter() - started
        )


def _send(
    upstream: Upstream,
    method: str,
    path: str,
    caller: Caller,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    content_type: str | None = None,
    idempotency_key: str | None = None,
) -> requests.Response:
    headers = _headers(idempotency_key)
    if content_type:
        headers["Content-Type"] = content_type
    started = time.perf_counter()
    response = _state().upstream.send(
        upstream,
        method,
        path,
        headers=headers,
        params={key: str(value) for key, value in (params or {}).items()},
        body=body,
        caller_authorization=caller.upstream_authorization,
    )
    _timed(upstream, started)
    return response


def _answer(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    return RelayedResponse(body, status=status, headers=headers)


def _relay(upstream: Upstream, method: str, path: str, caller: Caller, **kwargs: Any) -> Response:
    return relay_response(_send(upstream, method, path, caller, **kwargs), method=method)


def _present(upstream: Upstream, data: bytes, caller_model: str | None = None) -> bytes:
    """Show the caller the model name they use, not the upstream's deployment name."""
    answer = parse_object(data)
    deployed = answer.get("model") if answer else None
    if not isinstance(deployed, str):
        return data
    name = caller_model if caller_model in upstream.models else upstream.caller_model(deployed)
    if name is None or name == deployed or upstream.models[name].deployment != deployed:
        return data
    return json.dumps({**answer, "model": name}).encode("utf-8")


#: Sends a prepared POST: gets the cleanup stack and the upstream Idempotency-Key.
Dispatch = Callable[[ExitStack, str | None], tuple[Upstream, requests.Response]]


def _post(
    path: str,
    caller: Caller,
    kind: Kind | None,
    request_fingerprint: str,
    dispatch: Dispatch,
    upload: StreamedUpload | None = None,
    caller_model: str | None = None,
) -> Response:
    """Send a POST; record what it created; honour Idempotency-Key.

    For a streamed ``upload`` the fingerprint covers only what came before the video; the
    whole request's digest is kept with the answer and a repeat must match it too.
    """
    state = _state()
    if not _owned():
        with ExitStack() as stack:
            _, response = dispatch(stack, None)
        return relay_response(response, method="POST")
    ticket = None
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        claimed = state.idempotency.claim(_owner(caller), key, request_fingerprint)
        if isinstance(claimed, StoredResponse):
            if upload is not None and claimed.request_digest is not None:
                upload.drain()
                if upload.digest(path) != claimed.request_digest:
                    raise idempotency.reused()
            return idempotency.replay(claimed)
        ticket = claimed
    try:
        with ExitStack() as stack:
            upstream_key = state.idempotency.upstream_key(ticket) if ticket else None
            upstream, response = dispatch(stack, upstream_key)
        status, headers, data = read_answer(response, method="POST")
    except (UpstreamUnreachable, UpstreamTimeout) as error:
        # The upstream may have acted on it: the failure is the answer, kept for retries.
        if ticket:
            envelope = json.dumps(error.envelope()).encode()
            headers = [("Content-Type", "application/json"), *error.headers.items()]
            state.idempotency.finish(ticket, StoredResponse(error.status, headers, envelope))
        raise
    except BaseException:
        if ticket:
            state.idempotency.release(ticket)
        raise
    if upload is not None and (info := current_info()) is not None:
        info.extra["bytes_in"] = upload.bytes_read
    data = _present(upstream, data, caller_model)
    if kind is not None and 200 <= status < 300:
        state.ownership.record_created(_owner(caller), kind, data, upstream.name)
    if ticket:
        digest = upload.digest(path) if upload is not None else None
        state.idempotency.finish(ticket, StoredResponse(status, headers, data, digest))
    return _answer(status, headers, data)


def _to(upstream: Upstream, path: str, caller: Caller, prepared: Prepared) -> Dispatch:
    """A dispatch of ``prepared`` to one known upstream (by-id routes, uploads)."""
    body, content_type = prepared

    def dispatch(_: ExitStack, key: str | None) -> tuple[Upstream, requests.Response]:
        response = _send(upstream, "POST", path, caller, body=body, content_type=content_type,
                         idempotency_key=key)
        return upstream, response

    return dispatch


def _upstream_of(caller: Caller, resource_id: str, kind: Kind) -> Upstream:
    """The upstream holding ``resource_id``; with a store, only if the caller owns it."""
    catalog = _state().upstream.catalog
    if not _owned():
        return next(iter(catalog.upstreams.values()))
    record = _state().ownership.require(_owner(caller), resource_id, kind)
    upstream = catalog.upstreams.get(record.upstream)
    if upstream is None:
        raise UpstreamUnreachable(
            "The upstream that holds this resource is no longer configured.",
            code="upstream_not_configured",
        )
    return upstream


def _default_upstream() -> Upstream:
    """Where new jobs without a model go (uploaded edits, characters): the first choice for
    the default model."""
    return _state().upstream.catalog.candidates(DEFAULT_MODEL, None, None)[0]


def _json_body(data: dict[str, Any]) -> Prepared:
    return json.dumps(data).encode("utf-8"), "application/json"


def _file_digests(body: FormBody) -> dict[str, str]:
    digests = {}
    for name, upload in body.files.items():
        digests[name] = hashlib.sha256(upload.stream.read()).hexdigest()
        upload.stream.seek(0)
    return digests


def create_video() -> Response:
    """``POST /v1/videos``: validate, infer size, rewrite the reference, route by model."""
    caller = _caller()
    state = _state()
    body = read_form_body(request, max_bytes=state.settings.create_body_limit)
    params = load_create(body)
    _note_prompt(params)
    fingerprint = idempotency.fingerprint("create", params, _file_digests(body))
    plan: CreatePlan | None = None

    def dispatch(_: ExitStack, key: str | None) -> tuple[Upstream, requests.Response]:
        nonlocal plan
        plan = plan_create(body, params, state.settings, state.upstream.catalog)
        candidates = state.upstream.catalog.candidates(plan.model, plan.size, plan.seconds)
        started = time.perf_counter()
        upstream, response = state.upstream.send_first(
            candidates, "POST", "/videos", lambda u: _encoded(plan, u),
            headers=_headers(key), caller_authorization=caller.upstream_authorization,
        )
        _timed(upstream, started)
        return upstream, response

    return _post("/videos", caller, "video", fingerprint, dispatch,
                 caller_model=params.get("model") or DEFAULT_MODEL)


def _encoded(plan: CreatePlan | None, upstream: Upstream) -> tuple[bytes, str]:
    assert plan is not None
    encoded = plan.encode(upstream)
    return encoded.content, encoded.content_type


def list_videos() -> Response:
    """``GET /v1/videos``: the caller's own videos when a store keeps them."""
    caller = _caller()
    query = load_or_raise(ListQuerySchema(), request.args.to_dict())
    if _owned():
        page = _state().ownership.list_page(_owner(caller), query)
        return Response(json.dumps(page), mimetype="application/json")
    upstream = next(iter(_state().upstream.catalog.upstreams.values()))
    return _relay(upstream, "GET", "/videos", caller, params=query)


def retrieve_video(video_id: str) -> Response:
    """``GET /v1/videos/{video_id}``, from the upstream that holds it."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}"
    upstream = _upstream_of(caller, video_id, "video")
    if not _owned():
        return _relay(upstream, "GET", path, caller)
    status, headers, data = read_answer(_send(upstream, "GET", path, caller), method="GET")
    data = _present(upstream, data)
    if status == 200:
        _state().ownership.refresh(video_id, data)
    return _answer(status, headers, data)


def delete_video(video_id: str) -> Response:
    """``DELETE /v1/videos/{video_id}`` (the SDK's empty JSON body is ignored)."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}"
    upstream = _upstream_of(caller, video_id, "video")
    if not _owned():
        return _relay(upstream, "DELETE", path, caller)
    status, headers, data = read_answer(_send(upstream, "DELETE", path, caller), method="DELETE")
    if 200 <= status < 300:
        _state().ownership.store.forget(video_id)
    return _answer(status, headers, data)


def video_content(video_id: str) -> Response:
    """``GET|HEAD /v1/videos/{video_id}/content``: streamed, Range and conditionals relayed."""
    caller = _caller()
    query = load_or_raise(ContentQuerySchema(), request.args.to_dict())
    path = f"/videos/{check_id(video_id, 'video_id')}/content"
    upstream = _upstream_of(caller, video_id, "video")
    return _relay(upstream, request.method, path, caller, params=query)


def remix_video(video_id: str) -> Response:
    """``POST /v1/videos/{video_id}/remix``: JSON or multipart ``{prompt}``, sent as JSON."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}/remix"
    body = read_form_body(request, max_bytes=SMALL_BODY_BYTES)
    if body.files:
        raise InvalidRequest("remix takes no file parts.", param=next(iter(body.files)))
    fields = load_or_raise(RemixSchema(), body.fields)
    _note_prompt(fields)
    upstream = _upstream_of(caller, video_id, "video")
    fingerprint = idempotency.fingerprint(f"remix/{video_id}", fields)
    return _post(path, caller, "video", fingerprint,
                 _to(upstream, path, caller, _json_body(fields)))


def edit_video() -> Response:
    """``POST /v1/videos/edits``: a ``video`` file streamed through, or ``{"id"}``."""
    return _video_job("/videos/edits", EditSchema)


def extend_video() -> Response:
    """``POST /v1/videos/extensions``: like edits, plus ``seconds``."""
    return _video_job("/videos/extensions", ExtendSchema)


def _video_job(path: str, schema: type) -> Response:
    caller = _caller()
    if media_type(request) == "application/json":
        fields = load_or_raise(schema(), read_json_object(request, max_bytes=SMALL_BODY_BYTES))
        _note_prompt(fields)
        if "video" not in fields:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")
        upstream = _upstream_of(caller, fields["video"]["id"], "video")
        fingerprint = idempotency.fingerprint(path, fields)
        return _post(path, caller, "video", fingerprint,
                     _to(upstream, path, caller, _json_body(fields)))
    upload = _streamed_upload()
    head = upload.read_head()

    def check(fields: dict[str, Any], *, partial: bool = False) -> None:
        checked = load_or_raise(schema(partial=partial), fields)
        has_id = "video" in checked
        if head.file_name is not None and has_id:
            raise InvalidRequest("Send 'video' as a file or as {id}, not both.", param="video")
        if not partial and head.file_name is None and not has_id:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")

    check(head.fields, partial=not head.complete)
    _note_prompt(head.fields)
    video = head.fields.get("video")
    by_id = isinstance(video, dict) and isinstance(video.get("id"), str)
    upstream = _upstream_of(caller, video["id"], "video") if by_id else _default_upstream()
    prepared = (upload.body(check), upload.content_type)
    return _post(path, caller, "video", upload.fingerprint(path, head),
                 _to(upstream, path, caller, prepared), upload)


def create_character() -> Response:
    """``POST /v1/videos/characters``: multipart ``video`` file and ``name``, streamed."""
    caller = _caller()
    upload = _streamed_upload()
    head = upload.read_head()
    if head.complete and head.file_name is None:
        raise InvalidRequest("Missing required parameter: 'video' (a video file).", param="video")
    load_or_raise(CharacterSchema(partial=True), head.fields)

    def check(fields: dict[str, Any]) -> None:
        load_or_raise(CharacterSchema(), fields)

    path = "/videos/characters"
    prepared = (upload.body(check), upload.content_type)
    return _post(path, caller, "character", upload.fingerprint(path, head),
                 _to(_default_upstream(), path, caller, prepared), upload)


def get_character(character_id: str) -> Response:
    """``GET /v1/videos/characters/{character_id}``."""
    caller = _caller()
    path = f"/videos/characters/{check_id(character_id, 'character_id')}"
    return _relay(_upstream_of(caller, character_id, "character"), "GET", path, caller)


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
    fingerprint = idempotency.fingerprint("sora/characters", body)
    path = "/videos/characters"
    upstream = _default_upstream()

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

        def file_chunks() -> Iterator[bytes]:
            yield first
            yield from chunks

        filename = f"character.{_VIDEO_EXTENSIONS[video_type]}"
        prepared = multipart_stream(
            text, "video", filename, video_type, file_chunks(), fetched.content_length
        )
        # Sent while the fetch is open: the fetched body streams into the upstream request.
        return _to(upstream, path, caller, prepared)(stack, key)

    return _post(path, caller, "character", fingerprint, dispatch)


def models() -> Response:
    """``GET /v1/videos/models``: the offered models with their sizes and seconds."""
    _caller()
    catalog = _state().upstream.catalog
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
        request.stream,
        request.headers["Content-Type"],
        boundary,
        request.content_length,
        max_bytes=_state().settings.max_video_bytes,
    )
