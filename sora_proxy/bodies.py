"""Reading request bodies: Content-Type dispatch, size caps, JSON and multipart forms.

Multipart text parts may use the bracket notation the OpenAI SDKs produce for nested values
(``input_reference[image_url]``, ``metadata[output_config][aspect_ratio]``, ``tags[]``); they
are rebuilt into the same nested objects a JSON body would carry, so the rest of the proxy sees
one shape whatever the encoding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Request
from werkzeug.datastructures import FileStorage

from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

_BRACKETED = re.compile(r"^(?P<head>[^\[\]]+)(?P<rest>(?:\[[^\[\]]*\])+)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
#: Text parts are small; the cap only guards against a form of a million empty parts.
MAX_FORM_PARTS = 1000


@dataclass
class FormBody:
    """A request body as fields plus, for multipart, its file parts by name."""

    fields: dict[str, Any]
    files: dict[str, FileStorage] = field(default_factory=dict)
    multipart: bool = False


def media_type(request: Request) -> str:
    """The body's media type, lower-cased, without parameters."""
    return (request.mimetype or "").lower()


def read_form_body(request: Request, *, max_bytes: int) -> FormBody:
    """Read a JSON object or multipart/form-data body of at most ``max_bytes``.

    :raises UnsupportedMediaType: any other Content-Type (415).
    :raises PayloadTooLarge: a body over the cap (413).
    :raises InvalidRequest: unparseable JSON, a non-object JSON body, a repeated field (400).
    """
    _limit(request, max_bytes)
    request.max_form_memory_size = max_bytes
    request.max_form_parts = MAX_FORM_PARTS
    kind = media_type(request)
    if kind == "application/json":
        return FormBody(_read_json_object(request))
    if kind == "multipart/form-data":
        return _read_multipart(request)
    raise UnsupportedMediaType(
        f"Content-Type '{kind or 'none'}' is not supported; send application/json or "
        "multipart/form-data."
    )


def read_json_object(request: Request, *, max_bytes: int) -> dict[str, Any]:
    """Read a JSON object body (used by routes that take JSON only)."""
    _limit(request, max_bytes)
    return _read_json_object(request)


def _limit(request: Request, max_bytes: int) -> None:
    """Refuse a declared length over ``max_bytes`` and cap what is read of a chunked body.

    The limit is set on this request only: the host app's own MAX_CONTENT_LENGTH stays as it is.
    """
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than the {max_bytes}-byte limit.")
    request.max_content_length = max_bytes


def _read_json_object(request: Request) -> dict[str, Any]:
    data = request.get_json(silent=True, force=True)
    if data is None:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object.",
            code="invalid_json",
        )
    if not isinstance(data, dict):
        raise InvalidRequest("The JSON body must be an object.", code="invalid_json")
    return data


def _read_multipart(request: Request) -> FormBody:
    if any(not name for name in (*request.form.keys(), *request.files.keys())):
        raise InvalidRequest("Every multipart part needs a name.", code="invalid_multipart")
    files: dict[str, FileStorage] = {}
    for name, storage in request.files.items(multi=True):
        if name in files:
            raise InvalidRequest(f"File part '{name}' appears more than once.", param=name)
        files[name] = storage
    fields = nest_form_fields(request.form.items(multi=True))
    for name in files:
        if name in fields:
            raise InvalidRequest(
                f"'{name}' is sent both as a file and as a text part.", param=name
            )
    return FormBody(fields, files, multipart=True)


def nest_form_fields(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested objects from bracketed part names.

    ``a[b][c]=1`` becomes ``{"a": {"b": {"c": "1"}}}`` and ``t[]=x`` appends to a list.
    A name given twice, or both plain and bracketed, is a 400 naming it.
    """
    result: dict[str, Any] = {}
    for name, value in items:
        match = _BRACKETED.match(name)
        path = [match.group("head"), *_SEGMENT.findall(match.group("rest"))] if match else [name]
        _place(result, path, value, name)
    return result


def _place(target: dict[str, Any], path: list[str], value: str, name: str) -> None:
    if "" in path[:-1] or (path[-1] == "" and len(path) < 2):
        raise InvalidRequest(f"Form part name '{name}' is not supported.", param=name)
    node = target
    for key in path[:-2]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise InvalidRequest(f"Form part '{name}' conflicts with another part.", param=name)
    if path[-1] == "":
        items = node.setdefault(path[-2], [])
        if not isinstance(items, list):
            raise InvalidRequest(f"Form part '{name}' conflicts with another part.", param=name)
        items.append(value)
        return
    if len(path) > 1:
        node = node.setdefault(path[-2], {})
        if not isinstance(node, dict):
            raise InvalidRequest(f"Form part '{name}' conflicts with another part.", param=name)
    if path[-1] in node:
        raise InvalidRequest(f"Form part '{name}' appears more than once.", param=name)
    node[path[-1]] = value
