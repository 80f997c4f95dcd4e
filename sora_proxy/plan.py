"""From a caller's create body to a plan any upstream's dialect can encode.

Whatever the caller sent as ``input_reference`` is resolved to image bytes (or a ``file_id``),
the size is decided and the image fitted to it, before any upstream is chosen; the dialect
then writes the plan in its upstream's form (:meth:`CreatePlan.encoded_for`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .bodies import FormBody
from .dialects import EncodedBody
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
from .sizing import ModelRoute, decide_size

if TYPE_CHECKING:
    from .catalog import Upstream

_ORDERED = ("prompt", "model", "size", "seconds")


@dataclass(frozen=True)
class CreatePlan:
    """A validated create, ready to be encoded for whichever upstream takes it.

    :param model: the caller-facing model (the catalog's default when the caller named none).
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
        size = self.fields.get("size")
        return size if isinstance(size, str) else None

    @property
    def seconds(self) -> str | None:
        """The seconds asked for, if any."""
        seconds = self.fields.get("seconds")
        return seconds if isinstance(seconds, str) else None

    def encoded_for(self, upstream: Upstream) -> EncodedBody:
        """This create in ``upstream``'s dialect."""
        return upstream.dialect.encode_create(upstream, self)


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
    body: FormBody,
    params: dict[str, Any],
    settings: Settings,
    models: Mapping[str, ModelRoute],
    default_model: str,
) -> CreatePlan:
    """Plan a create whose fields :func:`load_create` checked.

    :param models: every offered model, with the sizes and seconds some upstream allows.
    :param default_model: the model when the caller named none.
    :raises ProxyError: an unknown model, an unreadable or refused reference, or a size
        conflict, all before any upstream is contacted.
    """
    model = params.get("model") or default_model
    route = models.get(model)
    if route is None:
        raise InvalidRequest(
            f"Invalid 'model': must be one of {', '.join(sorted(models))}.", param="model"
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
        (
            name,
            upload.filename or name,
            read_upload(upload.stream, max_bytes=settings.max_reference_bytes, param=name),
            upload.mimetype or None,
        )
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
