"""From a caller's create body to the one request the upstream takes.

The upstream accepts ``input_reference`` only as a real image file part of exactly the video's
size (see ``shared/UPSTREAM.md``), so whatever the caller sent is resolved to image bytes,
the size is decided, the image fitted, and a multipart body built. A ``{file_id}`` reference
is the one exception: it can only be expressed in the upstream's JSON form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from urllib3 import encode_multipart_formdata

from .bodies import FormBody
from .fetch import FetchPolicy
from .references import PARAM as REFERENCE_PARAM
from .references import (
    FileIdReference,
    Reference,
    ReferenceImage,
    fit_image,
    load_image,
    read_upload,
    resolve_reference,
)
from .schemas import CreateVideoSchema, load_or_raise, load_output_config
from .settings import Settings
from .sizing import decide_size

_ORDERED = ("prompt", "model", "size", "seconds")


@dataclass(frozen=True)
class UpstreamBody:
    """An encoded request body and its Content-Type."""

    content: bytes
    content_type: str


def fetch_policy(settings: Settings, *, video: bool = False) -> FetchPolicy:
    """The URL-fetch rules for a reference image, or (``video``) a character video."""
    deadline = settings.fetch_video_timeout if video else settings.fetch_timeout
    return FetchPolicy(
        max_bytes=settings.max_video_bytes if video else settings.max_reference_bytes,
        allow_private=settings.fetch_allow_private,
        deadline=deadline,
        connect_timeout=min(settings.connect_timeout, deadline),
    )


def load_create(body: FormBody) -> dict[str, Any]:
    """The create body's fields, validated and normalised (``seconds`` as a string…)."""
    return load_or_raise(CreateVideoSchema(), body.fields)


def plan_create(body: FormBody, params: dict[str, Any], settings: Settings) -> UpstreamBody:
    """Build the upstream request body for a create whose fields :func:`load_create` checked.

    :raises ProxyError: an unreadable or refused reference, or a size conflict, all before
        the upstream is contacted.
    """
    output_config = load_output_config(params.get("metadata"))
    reference = _reference(body, params, settings)
    image = reference if isinstance(reference, ReferenceImage) else None
    size = decide_size(
        params.get("model"), params.get("size"), output_config, image.size if image else None
    )
    if image is not None and size is not None:
        image = fit_image(image, size, settings.reference_fit)

    fields: dict[str, Any] = {name: params[name] for name in _ORDERED if name in params}
    if size is not None:
        fields["size"] = str(size)
    declared = set(CreateVideoSchema().fields)
    fields.update((name, value) for name, value in params.items() if name not in declared)
    if settings.forward_metadata and params.get("metadata") is not None:
        fields["metadata"] = params["metadata"]

    if isinstance(reference, FileIdReference):
        fields[REFERENCE_PARAM] = {"file_id": reference.file_id}
        return UpstreamBody(json.dumps(fields).encode("utf-8"), "application/json")
    parts: list[Any] = [(name, form_text(value)) for name, value in fields.items()]
    if image is not None:
        parts.append((REFERENCE_PARAM, (image.filename, image.data, image.mime_type)))
    for name, upload in body.files.items():
        if name != REFERENCE_PARAM:
            data = read_upload(upload.stream, max_bytes=settings.max_reference_bytes, param=name)
            parts.append((name, (upload.filename or name, data, upload.mimetype or None)))
    content, content_type = encode_multipart_formdata(parts)
    return UpstreamBody(content, content_type)


def _reference(body: FormBody, params: dict[str, Any], settings: Settings) -> Reference | None:
    upload = body.files.get(REFERENCE_PARAM)
    if upload is not None:
        data = read_upload(upload.stream, max_bytes=settings.max_reference_bytes)
        return load_image(data)
    value = params.get(REFERENCE_PARAM)
    if value is None or value == "":
        return None
    return resolve_reference(value, fetch_policy(settings))


def form_text(value: Any) -> str:
    """A field value as multipart text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
