"""The route handlers. Each reads top to bottom: who is calling, the body, the plan, the send,
the answer.

In pass-through and anonymous modes answers stream straight back. When a store keeps records
(callers identified, or several upstreams), by-id calls check the caller's record first (and
go to the upstream it names), and paid POSTs go through :func:`sora_proxy.paid.post`.
"""

from __future__ import annotations

import json
from typing import Any

import requests
from flask import Response, request
from marshmallow import Schema

from . import charges, content_urls, handoff, idempotency, jobs, stream_cap, tracker
from .archiving import archived_variant, forget_archived
from .auth import Caller
from .bodies import media_type, read_form_body, read_json_object
from .catalog import Upstream
from .client import forwarded_headers
from .dialects import EncodedBody, Operation
from .dialects.openai import form_text
from .errors import InvalidRequest, NotFound, UnsupportedByUpstream
from .extension import ProxyState, proxy_state
from .fetch import open_url
from .observability import current_request_id, note_caller, note_prompt, note_upstream
from .paid import PaidRequest, post
from .plan import CreatePlan, fetch_policy, load_create, plan_create
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
from .store import Kind, OwnedResource
from .streaming import read_answer, small_answer, stream_back
from .uploads import UploadHead, fetched_video_body, streamed_upload

#: Cap on small JSON bodies (remix, edits by id): a 32000-character prompt and some slack.
SMALL_BODY_BYTES = MIB


def create_video() -> Response:
    """``POST /v1/videos``: validate, infer size, rewrite the reference, route by model."""
    caller = _caller()
    state = proxy_state()
    body = read_form_body(request, max_bytes=state.settings.create_body_limit)
    params = load_create(body)
    note_prompt(params)
    plan = plan_create(
        body, params, state.settings, state.catalog.models, state.catalog.default_model
    )
    _require_referenced(caller, params, plan)
    return post(
        caller,
        PaidRequest(
            "/videos",
            "video",
            candidates=state.catalog.candidates(plan.model, plan.size, plan.seconds),
            body=plan.encoded_for,
            fingerprint=lambda: idempotency.fingerprint("create", params, body.file_digests()),
            caller_model=plan.model,
            asked=plan.fields,
            charge=charges.for_create(plan, state.catalog),
        ),
    )


def list_videos() -> Response:
    """``GET /v1/videos``: the caller's own videos when a store keeps them."""
    caller = _caller()
    query = load_or_raise(ListQuerySchema(), request.args.to_dict())
    records = proxy_state().records
    if records is None:
        return _stream(_upstream_of(caller, None, "video"), "GET", "/videos", caller, query)
    page = records.ownership.list_page(caller.owner, query)
    return Response(json.dumps(page), mimetype="application/json")


def retrieve_video(video_id: str) -> Response:
    """``GET /v1/videos/{video_id}``, from the upstream that holds it (or the store)."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}"
    state = proxy_state()
    record, upstream = _video_of(caller, video_id)
    if state.records is None:
        return _stream(upstream, "GET", path, caller)
    if record is not None and (upstream.dialect.proxy_owned or tracker.follows(state, upstream)):
        return jobs.retrieve(state, record, upstream)
    status, headers, data = read_answer(_send(upstream, "GET", path, caller), method="GET")
    data = upstream.dialect.present(upstream, data)
    if status == 200:
        state.records.ownership.refresh(video_id, data)  # a cache write: never fails the read
    return small_answer(status, headers, data)


def delete_video(video_id: str) -> Response:
    """``DELETE /v1/videos/{video_id}`` (the SDK's empty JSON body is ignored)."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}"
    state = proxy_state()
    records = state.records
    record, upstream = _video_of(caller, video_id)
    if records is None:
        return _stream(upstream, "DELETE", path, caller)
    if record is not None and upstream.dialect.proxy_owned:
        jobs.delete_upstream(state.client, record, upstream, request.headers)
        records.store.forget(video_id)  # forgotten here whatever the upstream said
        forget_archived(state, video_id)
        state.budgets.forgotten(record)
        return jobs.deleted(video_id)
    status, headers, data = read_answer(_send(upstream, "DELETE", path, caller), method="DELETE")
    if 200 <= status < 300:
        records.store.forget(video_id)
        forget_archived(state, video_id)
        if record is not None:
            state.budgets.forgotten(record)
    return small_answer(status, headers, data)


def video_content(video_id: str) -> Response:
    """``GET|HEAD /v1/videos/{video_id}/content``: streamed, Range and conditionals relayed.

    With ``?token=`` (a signed content URL, :mod:`sora_proxy.content_urls`) no
    ``Authorization`` is needed, and one that is sent is ignored: the token alone decides,
    as the caller it names, and then everything goes as for that caller's own download.
    Behind the shipped nginx site with ``SORA_PROXY_HANDOFF=nginx``, the bytes are handed to
    nginx (:mod:`sora_proxy.handoff`); a stream the proxy sends itself counts against
    ``SORA_PROXY_STREAMS_PER_CALLER`` (:mod:`sora_proxy.stream_cap`).
    """
    token = request.args.get("token")
    if token is None:
        caller = _caller()
    else:
        caller = content_urls.token_caller(token, video_id, request.args.get("variant", "video"))
        note_caller(caller.name)
    query = load_or_raise(ContentQuerySchema(), request.args.to_dict())
    query.pop("token", None)  # the proxy's own credential: never sent upstream
    check_id(video_id, "video_id")
    record, upstream = _video_of(caller, video_id)
    state = proxy_state()
    slot = stream_cap.acquire(handoff.stream_key(caller), state.settings.streams_per_caller)
    try:
        response = _content(state, caller, record, upstream, video_id, query)
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    return response if slot is None else slot.hold(response)


def _content(
    state: ProxyState,
    caller: Caller,
    record: OwnedResource | None,
    upstream: Upstream,
    video_id: str,
    query: dict[str, Any],
) -> Response:
    """The content answer: from the archive, the job's source, or the upstream, handed to
    nginx where this request may be."""
    to_nginx = handoff.for_request(state, caller)
    path = f"/videos/{video_id}/content"
    variant = query.get("variant", "video")
    archived = archived_variant(state, video_id, variant, to_nginx) if record else None
    if archived is not None:
        return archived
    if record is not None and upstream.dialect.proxy_owned:
        return jobs.content(
            state.client,
            record,
            upstream,
            request.headers,
            method=request.method,
            variant=variant,
            allow_private=state.settings.fetch_allow_private,
            handoff=to_nginx,
        )
    if to_nginx is not None:
        params = {key: str(value) for key, value in query.items()}
        handed = to_nginx.upstream(
            upstream,
            path,
            params=params,
            caller_authorization=caller.upstream_authorization,
            location="relay",
        )
        if handed is not None:
            return handed
    return handoff.scrubbed(_stream(upstream, request.method, path, caller, query))


def create_content_url(video_id: str) -> Response:
    """``POST /v1/videos/{video_id}/content_url``: a short-lived signed URL for a variant.

    Optional JSON body ``{"variant": "video"|"thumbnail"|"spritesheet", "expires_in": s}``.
    Only the video's owner may have one (another caller's id is the same 404 as an unknown
    one). A video the proxy knows is not completed is refused, 409 ``video_not_ready``, as
    its content would be; without a store the proxy knows no status and signs anyway.
    """
    caller = _caller()
    check_id(video_id, "video_id")
    has_body = request.content_length or "Transfer-Encoding" in request.headers
    body = read_json_object(request, max_bytes=SMALL_BODY_BYTES) if has_body else {}
    variant, expires_in = content_urls.read_request(body, proxy_state().settings)
    record, upstream = _video_of(caller, video_id)
    content_urls.require_signable(caller, video_id, record, upstream)
    answer = content_urls.mint(caller, video_id, variant, expires_in)
    return Response(json.dumps(answer), mimetype="application/json")


def remix_video(video_id: str) -> Response:
    """``POST /v1/videos/{video_id}/remix``: JSON or multipart ``{prompt}``, sent as JSON."""
    caller = _caller()
    path = f"/videos/{check_id(video_id, 'video_id')}/remix"
    body = read_form_body(request, max_bytes=SMALL_BODY_BYTES)
    if body.files:
        raise InvalidRequest("remix takes no file parts.", param=next(iter(body.files)))
    fields = load_or_raise(RemixSchema(), body.fields)
    note_prompt(fields)
    return _post_json_job(
        caller, path, video_id, fields, route=f"remix/{video_id}", operation="remix"
    )


def edit_video() -> Response:
    """``POST /v1/videos/edits``: a ``video`` file streamed through, or ``{"id"}``."""
    return _video_job("/videos/edits", EditSchema)


def extend_video() -> Response:
    """``POST /v1/videos/extensions``: like edits, plus ``seconds``."""
    return _video_job("/videos/extensions", ExtendSchema)


def _video_job(path: str, schema: type[Schema]) -> Response:
    """Edits and extensions: JSON ``{video: {id}}``, or multipart with a file or ``video[id]``."""
    caller = _caller()
    if media_type(request) == "application/json":
        return _video_job_by_id(path, schema, caller)
    upload = streamed_upload(request, max_bytes=proxy_state().settings.max_video_bytes)
    head = upload.read_head()
    check = _VideoJobCheck(schema, caller, head)
    check(head.fields, partial=not head.complete)
    note_prompt(head.fields)
    video = head.fields.get("video")
    by_id = video["id"] if isinstance(video, dict) and isinstance(video.get("id"), str) else None
    upstream = _upstream_of(caller, by_id, "video")
    _require_operation(upstream, "edits" if path.endswith("edits") else "extensions")
    if upstream.dialect.proxy_owned:
        raise UnsupportedByUpstream("uploaded edits and extensions", upstream.name)
    source = _owned_video(caller, by_id)
    operation = "edit" if path.endswith("edits") else "extend"
    return post(
        caller,
        PaidRequest(
            path,
            "video",
            [upstream],
            EncodedBody(upload.body(check), upload.content_type),
            fingerprint=lambda: upload.fingerprint(path, head),
            upload=upload,
            charge=charges.for_source(operation, source, head.fields, proxy_state().catalog),
        ),
    )


def _video_job_by_id(path: str, schema: type[Schema], caller: Caller) -> Response:
    fields = load_or_raise(schema(), read_json_object(request, max_bytes=SMALL_BODY_BYTES))
    note_prompt(fields)
    if "video" not in fields:
        raise InvalidRequest("Missing required parameter: 'video'.", param="video")
    operation: Operation = "edits" if path.endswith("edits") else "extensions"
    return _post_json_job(
        caller, path, fields["video"]["id"], fields, route=path, operation=operation
    )


def _post_json_job(
    caller: Caller,
    path: str,
    video_id: str,
    fields: dict[str, Any],
    *,
    route: str,
    operation: Operation,
) -> Response:
    """A paid JSON job on one of the caller's videos (remix, edit or extend by id)."""
    record, upstream = _video_of(caller, video_id)
    _require_operation(upstream, operation)
    _require_referenced(caller, fields)
    if record is not None and record.handle is not None:
        if operation != "remix":  # the upstream's id would have to replace ours in the body
            raise UnsupportedByUpstream(f"{operation} of its videos", upstream.name)
        path = f"/videos/{record.handle['id']}/remix"
    charged = {"remix": "remix", "edits": "edit", "extensions": "extend"}[operation]
    return post(
        caller,
        PaidRequest(
            path,
            "video",
            [upstream],
            EncodedBody.json(fields),
            fingerprint=lambda: idempotency.fingerprint(route, fields),
            asked=fields,
            charge=charges.for_source(charged, record, fields, proxy_state().catalog),
        ),
    )


class _VideoJobCheck:
    """The text parts of an edit or extension: checked on the head, and again (whole) before
    the upload's last chunk goes upstream."""

    def __init__(self, schema: type[Schema], caller: Caller, head: UploadHead) -> None:
        self.schema, self.caller, self.head = schema, caller, head

    def __call__(self, fields: dict[str, Any], *, partial: bool = False) -> None:
        checked = load_or_raise(self.schema(partial=partial), fields)
        _require_referenced(self.caller, checked)
        has_id = "video" in checked
        if self.head.file_name is not None and has_id:
            raise InvalidRequest("Send 'video' as a file or as {id}, not both.", param="video")
        if not partial and self.head.file_name is None and not has_id:
            raise InvalidRequest("Missing required parameter: 'video'.", param="video")


def create_character() -> Response:
    """``POST /v1/videos/characters``: multipart ``video`` file and ``name``, streamed."""
    caller = _caller()
    upload = streamed_upload(request, max_bytes=proxy_state().settings.max_video_bytes)
    head = upload.read_head()
    if head.complete and head.file_name is None:
        raise InvalidRequest("Missing required parameter: 'video' (a video file).", param="video")
    load_or_raise(CharacterSchema(partial=True), head.fields)
    path = "/videos/characters"
    return post(
        caller,
        PaidRequest(
            path,
            "character",
            [_character_upstream(caller)],
            EncodedBody(upload.body(_check_character), upload.content_type),
            fingerprint=lambda: upload.fingerprint(path, head),
            upload=upload,
        ),
    )


def _check_character(fields: dict[str, Any]) -> None:
    load_or_raise(CharacterSchema(), fields)


def get_character(character_id: str) -> Response:
    """``GET /v1/videos/characters/{character_id}``."""
    caller = _caller()
    path = f"/videos/characters/{check_id(character_id, 'character_id')}"
    return _stream(_upstream_of(caller, character_id, "character"), "GET", path, caller)


def create_character_from_url() -> Response:
    """The seed's ``POST /sora/v1/characters``: fetch ``character_url``, upload it as a file."""
    caller = _caller()
    settings = proxy_state().settings
    body = read_json_object(request, max_bytes=SMALL_BODY_BYTES)
    fields = load_or_raise(SoraCharacterSchema(), body)
    start, end = fields.pop("character_timestamps")
    url = fields.pop("character_url")
    text = [("name", fields.pop("name")), ("character_timestamps", f"{start:g},{end:g}")]
    text += [(name, form_text(value)) for name, value in fields.items()]
    policy = fetch_policy(settings, video=True)
    # Sent while the fetch is open: the fetched body streams into the upstream request.
    with open_url(url, policy, param="character_url") as fetched:
        return post(
            caller,
            PaidRequest(
                "/videos/characters",
                "character",
                [_character_upstream(caller)],
                fetched_video_body(
                    text, fetched, param="character_url", max_bytes=settings.max_video_bytes
                ),
                fingerprint=lambda: idempotency.fingerprint("sora/characters", body),
            ),
        )


def usage() -> Response:
    """``GET /v1/usage``: the caller's spending, held amounts and limits, per period."""
    caller = _caller()
    return Response(
        json.dumps(proxy_state().budgets.usage(caller.owner)), mimetype="application/json"
    )


def models() -> Response:
    """``GET /v1/videos/models``: the offered models with their sizes and seconds."""
    _caller()
    data = [
        {"id": name, "object": "model", "sizes": list(route.sizes), "seconds": list(route.seconds)}
        for name, route in sorted(proxy_state().catalog.models.items())
    ]
    return Response(json.dumps({"object": "list", "data": data}), mimetype="application/json")


def _caller() -> Caller:
    """Who is calling (noted for the log line)."""
    caller = proxy_state().authenticator.authenticate(request)
    note_caller(caller.name)
    return caller


def _video_of(caller: Caller, video_id: str) -> tuple[OwnedResource | None, Upstream]:
    """The caller's record of ``video_id`` (when a store keeps them) and its upstream."""
    state = proxy_state()
    if state.records is None:
        return None, state.catalog.default_upstream()
    ownership = state.records.ownership
    record = ownership.require(caller.owner, video_id, "video")
    return record, ownership.upstream_for(record, state.catalog)


def _owned_video(caller: Caller, video_id: str | None) -> OwnedResource | None:
    """The caller's record of ``video_id`` when there is one (an upload names none)."""
    records = proxy_state().records
    if video_id is None or records is None:
        return None
    return records.ownership.require(caller.owner, video_id, "video")


def _character_upstream(caller: Caller) -> Upstream:
    """Where a new character goes: the default upstream, if it keeps characters."""
    upstream = _upstream_of(caller, None, "character")
    _require_operation(upstream, "characters")
    if upstream.dialect.proxy_owned:
        raise UnsupportedByUpstream("characters", upstream.name)
    return upstream


def _require_operation(upstream: Upstream, operation: Operation) -> None:
    """Refuse, before anything is sent, what the upstream cannot do."""
    if operation not in upstream.dialect.operations:
        raise UnsupportedByUpstream(operation, upstream.name)


def _upstream_of(caller: Caller, resource_id: str | None, kind: Kind) -> Upstream:
    """The upstream holding ``resource_id`` (only if the caller owns it, when a store keeps
    records); for a new job without an id, the default upstream."""
    state = proxy_state()
    if resource_id is None or state.records is None:
        return state.catalog.default_upstream()
    return state.records.ownership.upstream_of(caller.owner, resource_id, kind, state.catalog)


def _require_referenced(
    caller: Caller, fields: dict[str, Any], plan: CreatePlan | None = None
) -> None:
    """Ids a body names besides the route's own (characters, a file) must be the caller's."""
    records = proxy_state().records
    if records is None:
        return
    records.ownership.require_referenced(caller.owner, fields)
    if plan is not None and plan.file_id is not None:
        # Files cannot be uploaded through the proxy, so none on the shared account is the
        # caller's: the same 404 as for an id that does not exist.
        raise NotFound(
            f"File with id '{plan.file_id}' not found.",
            param="input_reference.file_id",
            code="file_not_found",
        )


def _send(
    upstream: Upstream,
    method: str,
    path: str,
    caller: Caller,
    params: dict[str, Any] | None = None,
) -> requests.Response:
    """One request to ``upstream`` with this request's forwarded headers."""
    headers = forwarded_headers(
        request.headers,
        read_whole=proxy_state().records is not None,
        request_id=current_request_id(),
    )
    response = proxy_state().client.send(
        upstream,
        method,
        path,
        headers=headers,
        params={key: str(value) for key, value in (params or {}).items()},
        caller_authorization=caller.upstream_authorization,
    )
    note_upstream(upstream.name, response)
    return response


def _stream(
    upstream: Upstream,
    method: str,
    path: str,
    caller: Caller,
    params: dict[str, Any] | None = None,
) -> Response:
    """Send, and stream the answer back unchanged."""
    return stream_back(_send(upstream, method, path, caller, params), method=method)
