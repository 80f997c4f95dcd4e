"""From a caller's create body to the one request the upstream takes.

The upstream accepts ``input_reference`` only as a real image file part of exactly the video's
size (see ``shared/UPSTREAM.md``), so whatever the caller sent is resolved to image bytes,
the size is decided, the image fitted, and a multipart body built. A ``{file_id}`` reference
is the one exception: it can only be expressed in the upstream's JSON form.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

from urllib3 import encode_multipart_formdata

from .bodies import FormBody
from .errors import InvalidRequest
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
from .sizing import DEFAULT_MODEL, decide_size
from .upstreams import Catalog, Upstream

_ORDERED = ("prompt", "model", "size", "seconds")


@dataclass(frozen=True)
class UpstreamBody:
    """An encoded request body and its Content-Type."""

    content: bytes
    content_type: str


@dataclass(frozen=True)
class CreatePlan:
    """A validated create, ready to be encoded for whichever upstream takes it.

    :param model: the caller-facing model (``sora-2`` when the caller named none).
    :param fields: the text fields in upstream order, the caller's model name included only
        if the caller gave one.
    """

    model: str
    fields: dict[str, Any]
    image: ReferenceImage | None = None
    file_id: str | None = None
    extra_files: tuple[tuple[str, str, bytes, str | None], ...] = ()

    @property
    def size(self) -> str | None:
        """The size decided for the video, if any."""
        return self.fields.get("size")

    @property
    def seconds(self) -> str | None:
        """The seconds asked for, if any."""
        return self.fields.get("seconds")

    def encode(self, upstream: Upstream) -> UpstreamBody:
        """The body in ``upstream``'s dialect: its deployment name for the model, and the
        reference as a file part (multipart, the default) or a data URI (``json`` form)."""
        fields = dict(self.fields)
        deployment = upstream.models[self.model].deployment
        if "model" in fields or deployment != self.model:
            fields["model"] = deployment
        if self.file_id is not None:
            fields[REFERENCE_PARAM] = {"file_id": self.file_id}
            return _json_body(fields)
        if self.image is not None and upstream.reference_form == "json":
            if self.extra_files:
                raise InvalidRequest(
                    "This upstream takes JSON bodies; extra file parts cannot be sent.",
                    param=self.extra_files[0][0],
                )
            return _json_with_image(fields, self.image)
        parts: list[Any] = [(name, form_text(value)) for name, value in fields.items()]
        if self.image is not None:
            parts.append(
                (REFERENCE_PARAM, (self.image.filename, self.image.data, self.image.mime_type))
            )
        parts += [(name, (filename, data, mime)) for name, filename, data, mime in self.extra_files]
        content, content_type = encode_multipart_formdata(parts)
        return UpstreamBody(content, content_type)


def _json_body(fields: dict[str, Any]) -> UpstreamBody:
    return UpstreamBody(json.dumps(fields).encode("utf-8"), "application/json")


def _json_with_image(fields: dict[str, Any], image: ReferenceImage) -> UpstreamBody:
    """The JSON form with the image as a data URI, its base64 spliced in as bytes (the
    reference may be 27 MB of base64: one copy, not the five a str round trip makes)."""
    # A random stand-in, last in the body (the reference is the last field added).
    slot = f"sora-proxy-image-{secrets.token_hex(16)}"
    fields[REFERENCE_PARAM] = {"image_url": slot}
    head, tail = json.dumps(fields).encode("utf-8").rsplit(slot.encode("ascii"), 1)
    uri = f"data:{image.mime_type};base64,".encode("ascii")
    return UpstreamBody(b"".join((head, uri, base64.b64encode(image.data), tail)),
                        "application/json")


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


def plan_create(
    body: FormBody, params: dict[str, Any], settings: Settings, catalog: Catalog
) -> CreatePlan:
    """Plan a create whose fields :func:`load_create` checked.

    :raises ProxyError: an unknown model, an unreadable or refused reference, or a size
        conflict, all before any upstream is contacted.
    """
    model = params.get("model") or DEFAULT_MODEL
    route = catalog.models.get(model)
    if route is None:
        raise InvalidRequest(
            f"Invalid 'model': must be one of {', '.join(sorted(catalog.models))}.",
            param="model",
        )
    seconds = params.get("seconds")
    if seconds is not None and seconds not in route.seconds:
        raise InvalidRequest(
            f"Invalid 'seconds': Must be one of {', '.join(route.seconds)}.", param="seconds"
        )
    output_config = load_output_config(params.get("metadata"))
    reference = _reference(body, params, settings)
    image = reference if isinstance(reference, ReferenceImage) else None
    size = decide_size(
        model, route.sizes, params.get("size"), output_config, image.size if image else None
    )
    if image is not None:
        image = fit_image(image, size, settings.reference_fit)

    fields: dict[str, Any] = {name: params[name] for name in _ORDERED if name in params}
    if size is not None:
        fields["size"] = str(size)
    declared = set(CreateVideoSchema().fields)
    fields.update((name, value) for name, value in params.items() if name not in declared)
    if settings.forward_metadata and params.get("metadata") is not None:
        fields["metadata"] = params["metadata"]
    extra_files = tuple(
        (name, upload.filename or name,
         read_upload(upload.stream, max_bytes=settings.max_reference_bytes, param=name),
         upload.mimetype or None)
        for name, upload in body.files.items()
        if name != REFERENCE_PARAM
    )
    return CreatePlan(
        model=model,
        fields=fields,
        image=image,
        file_id=reference.file_id if isinstance(reference, FileIdReference) else None,
        extra_files=extra_files,
    )


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
