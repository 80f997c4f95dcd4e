"""Upstreams that speak OpenAI's Videos API itself: gateways, resellers, Azure's v1 surface.

Paths are OpenAI's under the upstream's ``base_url``; the key goes as ``Authorization: Bearer``
or, for Azure OpenAI, an ``api-key`` header; ``query`` (Azure's ``api-version``) is added to
every request. A create is multipart with the reference image as a file part of the video's
exact size (the one form every such upstream takes), or JSON with the image as a data URI for
upstreams configured with ``reference_form = "json"``; ``{file_id}`` only exists in the JSON
form. Callers see their own model name where the upstream answers with a deployment name.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from urllib3 import encode_multipart_formdata

from ..errors import InvalidRequest
from ..references import PARAM as REFERENCE_PARAM
from ..references import ReferenceImage
from ..streaming import parse_object
from .base import Dialect, EncodedBody, Fail

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan

#: The model an OpenAI-shaped upstream renders when a create names none.
UPSTREAM_DEFAULT_MODEL = "sora-2"
AuthStyle = Literal["bearer", "api-key"]
ReferenceForm = Literal["multipart", "json"]
_AUTH_STYLES: tuple[AuthStyle, ...] = ("bearer", "api-key")
_REFERENCE_FORMS: tuple[ReferenceForm, ...] = ("multipart", "json")


class OpenAIDialect(Dialect):
    """The OpenAI Videos API as OpenAI defined it.

    :param auth: ``bearer`` (``Authorization: Bearer <key>``) or ``api-key`` (Azure).
    :param reference_form: ``multipart`` (a file part) or ``json`` (``{image_url: data URI}``).
    """

    name = "openai"
    config_keys = frozenset({"auth", "reference_form", "gateway"})

    def __init__(
        self, auth: AuthStyle = "bearer", reference_form: ReferenceForm = "multipart"
    ) -> None:
        self.auth = auth
        self.reference_form = reference_form

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> OpenAIDialect:
        """Read ``auth``, ``reference_form`` and ``gateway`` (an OpenAI-format gateway whose
        answers differ from OpenAI's: ``new-api``, ``litellm``, ``reseller``)."""
        from .gateways import GATEWAYS  # the gateways build on this class

        gateway = entry.get("gateway")
        if gateway is not None and gateway not in GATEWAYS:
            raise fail(f"gateway must be one of {', '.join(sorted(GATEWAYS))}, not {gateway!r}")
        auth = entry.get("auth", "bearer")
        if auth not in _AUTH_STYLES:
            raise fail(f"auth must be 'bearer' or 'api-key', not {auth!r}")
        reference_form = entry.get("reference_form", "multipart")
        if reference_form not in _REFERENCE_FORMS:
            raise fail("reference_form must be 'multipart' or 'json'")
        chosen = GATEWAYS[gateway] if gateway is not None else cls
        return chosen(cast(AuthStyle, auth), cast(ReferenceForm, reference_form))

    def credentials(self, upstream: Upstream, caller_authorization: str | None) -> dict[str, str]:
        """The key as a bearer token, or (Azure) in an ``api-key`` header; the caller's own
        ``Authorization`` in pass-through."""
        if upstream.api_key is not None and self.auth == "api-key":
            return {"api-key": upstream.api_key}
        return super().credentials(upstream, caller_authorization)

    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """The upstream's deployment name for the model, and the reference in its form."""
        fields = dict(plan.fields)
        deployment = upstream.models[plan.model].deployment
        # Left out only when the caller left it out and the upstream's own default is meant.
        if "model" in fields or deployment != plan.model or plan.model != UPSTREAM_DEFAULT_MODEL:
            fields["model"] = deployment
        if plan.file_id is not None:
            fields[REFERENCE_PARAM] = {"file_id": plan.file_id}
            return EncodedBody(json.dumps(fields).encode("utf-8"), "application/json")
        if plan.image is not None and self.reference_form == "json":
            if plan.extra_files:
                raise InvalidRequest(
                    "This upstream takes JSON bodies; extra file parts cannot be sent.",
                    param=plan.extra_files[0][0],
                )
            return _json_with_image(fields, plan.image)
        parts: list[Any] = [(name, form_text(value)) for name, value in fields.items()]
        if plan.image is not None:
            image = plan.image
            parts.append((REFERENCE_PARAM, (image.filename, image.data, image.mime_type)))
        parts += [(name, (filename, data, mime)) for name, filename, data, mime in plan.extra_files]
        content, content_type = encode_multipart_formdata(parts)
        return EncodedBody(content, content_type)

    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """Show the caller the model name they use, not the upstream's deployment name."""
        answer = parse_object(body)
        deployed = answer.get("model") if answer else None
        if answer is None or not isinstance(deployed, str):
            return body
        name = (
            caller_model if caller_model in upstream.models else _caller_model(upstream, deployed)
        )
        if name is None or name == deployed or upstream.models[name].deployment != deployed:
            return body
        return json.dumps({**answer, "model": name}).encode("utf-8")


def _caller_model(upstream: Upstream, deployment: str) -> str | None:
    """The caller-facing name of a deployment, when this upstream renames one."""
    for route in upstream.models.values():
        if route.deployment == deployment and route.name != deployment:
            return route.name
    return None


def _json_with_image(fields: dict[str, Any], image: ReferenceImage) -> EncodedBody:
    """The JSON form with the image as a data URI, its base64 spliced in as bytes (the
    reference may be 27 MB of base64: one copy, not the five a str round trip makes)."""
    # A random stand-in, last in the body (the reference is the last field added).
    slot = f"sora-proxy-image-{secrets.token_hex(16)}"
    fields[REFERENCE_PARAM] = {"image_url": slot}
    head, tail = json.dumps(fields).encode("utf-8").rsplit(slot.encode("ascii"), 1)
    uri = f"data:{image.mime_type};base64,".encode("ascii")
    return EncodedBody(
        b"".join((head, uri, base64.b64encode(image.data), tail)), "application/json"
    )


def form_text(value: Any) -> str:
    """A field value as multipart text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)
