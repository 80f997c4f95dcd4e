"""Reading request bodies: Content-Type dispatch, size caps, JSON and multipart forms.

Multipart text parts may use the bracket notation the OpenAI SDKs produce for nested values
(``input_reference[image_url]``, ``metadata[output_config][aspect_ratio]``, ``tags[]``); they
are rebuilt into the same nested objects a JSON body would carry, so the rest of the proxy sees
one shape whatever the encoding.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from flask import Request, g
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
    Preamble,
)

from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from .offload import cpu_bound

_BRACKETED = re.compile(r"^(?P<head>[^\[\]]+)(?P<rest>(?:\[[^\[\]]*\])+)$")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
#: Text parts are small; the cap only guards against a form of a million empty parts.
MAX_FORM_PARTS = 1000
#: Deepest nesting of objects and lists accepted in a body (a create needs 3).
MAX_DEPTH = 32
#: Bytes read from the client per step.
READ_SIZE = 64 * 1024
MIB = 1024 * 1024
#: Bodies from this size up have their freed memory handed back when the request ends.
LARGE_BODY_BYTES = MIB


@dataclass
class FormBody:
    """A request body as fields plus, for multipart, its file parts by name."""

    fields: dict[str, Any]
    files: dict[str, FileStorage] = field(default_factory=dict)

    def file_digests(self) -> dict[str, str]:
        """The sha256 of each file part (for idempotency fingerprints), streams rewound."""
        return {name: cpu_bound(_digest, upload.stream) for name, upload in self.files.items()}


def _digest(stream: IO[bytes]) -> str:
    """The sha256 of ``stream``'s bytes, rewound afterwards (CPU work: off gevent's loop)."""
    digest = hashlib.sha256()
    while chunk := stream.read(READ_SIZE):
        digest.update(chunk)
    stream.seek(0)
    return digest.hexdigest()


def media_type(request: Request) -> str:
    """The body's media type, lower-cased, without parameters."""
    return (request.mimetype or "").lower()


def read_form_body(request: Request, *, max_bytes: int) -> FormBody:
    """Read a JSON object or multipart/form-data body of at most ``max_bytes``.

    :raises UnsupportedMediaType: any other Content-Type (415).
    :raises PayloadTooLarge: a body over the cap, declared or chunked (413).
    :raises InvalidRequest: unparseable or too deeply nested JSON, a non-object JSON body, a
        malformed multipart body, a repeated field, broken chunked framing (400).
    """
    _limit(request, max_bytes)
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


def read_client_bytes(stream: IO[bytes], size: int, *, max_bytes: int | None = None) -> bytes:
    """One read of the client's body, with what can go wrong said in the envelope.

    A chunked body over the cap is a 413; broken framing (a chunk size that is not hex, a
    missing terminator) or a body cut short is the client's fault, a 400, whatever the WSGI
    server raises for it.
    """
    try:
        return stream.read(size)
    except RequestEntityTooLarge:
        limit = f"the {max_bytes}-byte limit" if max_bytes else "the limit"
        raise PayloadTooLarge(f"The request body is larger than {limit}.") from None
    except HTTPException:
        raise
    except Exception:
        raise InvalidRequest(
            "The request body could not be read: its chunked framing is malformed or it ended "
            "early.",
            code="invalid_body",
        ) from None


class ClientStream:
    """The client's body stream, each read going through :func:`read_client_bytes`."""

    def __init__(self, stream: IO[bytes], *, max_bytes: int | None) -> None:
        self._stream = stream
        self._max_bytes = max_bytes

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of the body (``b""`` at its end)."""
        return read_client_bytes(self._stream, size, max_bytes=self._max_bytes)


def _read_all(request: Request) -> bytes | bytearray:
    """The whole (capped) body, in one buffer: a 28 MB create body is not held twice."""
    stream = request.stream
    cap = request.max_content_length
    body = bytearray()
    step = request.content_length or READ_SIZE
    while chunk := read_client_bytes(stream, step, max_bytes=cap):
        body += chunk
        step = READ_SIZE
    if len(body) >= LARGE_BODY_BYTES:
        g.sora_proxy_large_body = True
    return body


def _read_json_object(request: Request) -> dict[str, Any]:
    data = _read_all(request)
    try:
        value = json.loads(data)
    except RecursionError:
        raise _too_deep("The JSON body") from None
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest("The JSON body must be an object.", code="invalid_json")
    check_depth(value, "The JSON body")
    return value


def check_depth(value: Any, what: str, *, limit: int = MAX_DEPTH) -> None:
    """Refuse objects and lists nested deeper than ``limit`` (400), without recursion.

    Deep nesting serves no create field, and would make every later walk of the body
    (validation, fingerprints, encoding) hit Python's recursion limit.
    """
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise _too_deep(what, limit)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _too_deep(what: str, limit: int = MAX_DEPTH) -> InvalidRequest:
    return InvalidRequest(f"{what} is nested more than {limit} levels deep.", code="invalid_json")


def _read_multipart(request: Request) -> FormBody:
    """Parse a multipart body strictly: a missing or wrong boundary, a body that ends before
    its closing boundary, or a part without a name is a 400, never an empty form."""
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise _invalid_multipart("The multipart Content-Type has no boundary.")
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_parts=MAX_FORM_PARTS)
    form = _FormCollector()
    stream = request.stream
    finished = False
    while not finished:
        chunk = read_client_bytes(stream, READ_SIZE, max_bytes=request.max_content_length)
        try:
            decoder.receive_data(chunk or None)
            finished = form.take(decoder)
        except RequestEntityTooLarge:
            raise PayloadTooLarge(f"More than {MAX_FORM_PARTS} multipart parts.") from None
        except ValueError:
            if not form.started:
                raise _invalid_multipart(
                    "The multipart body has no part with the boundary its Content-Type declares."
                ) from None
            raise _invalid_multipart(
                "The multipart body is malformed or ends before its closing boundary."
            ) from None
        if not chunk and not finished:
            raise _invalid_multipart("The multipart body ends before its closing boundary.")
    fields = nest_form_fields(form.text)
    for name in form.files:
        if name in fields:
            raise InvalidRequest(f"'{name}' is sent both as a file and as a text part.", param=name)
    return FormBody(fields, form.files)


def _invalid_multipart(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_multipart")


class _FormCollector:
    """Collects a multipart body's parts from decoder events: text in memory, files spooled
    (to disk past 1 MiB, as werkzeug's own parser does)."""

    def __init__(self) -> None:
        self.text: list[tuple[str, str]] = []
        self.files: dict[str, FileStorage] = {}
        self.started = False
        self._current: Field | File | None = None
        self._buffer = bytearray()

    def take(self, decoder: MultipartDecoder) -> bool:
        """Handle every event ready; True once the closing boundary was seen."""
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                return False
            if isinstance(event, Epilogue):
                return True
            if isinstance(event, Preamble):
                self.started = True
            elif isinstance(event, Field | File):
                self._start(event)
            elif isinstance(event, Data):
                self._data(event)

    def _start(self, event: Field | File) -> None:
        if not event.name:
            raise _invalid_multipart("Every multipart part needs a name.")
        self._current = event
        self._buffer.clear()
        if isinstance(event, File):
            if event.name in self.files:
                raise InvalidRequest(
                    f"File part '{event.name}' appears more than once.", param=event.name
                )
            spooled = tempfile.SpooledTemporaryFile(max_size=MIB)
            self.files[event.name] = FileStorage(
                stream=spooled,
                filename=event.filename,
                name=event.name,
                content_type=event.headers.get("Content-Type"),
                headers=event.headers,
            )

    def _data(self, event: Data) -> None:
        current = self._current
        if isinstance(current, File):
            stream = self.files[current.name].stream
            stream.write(event.data)
            if not event.more_data:
                stream.seek(0)
            return
        self._buffer += event.data
        if not event.more_data and current is not None:
            try:
                value = bytes(self._buffer).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"Part '{current.name}' is not UTF-8 text.", param=current.name
                ) from None
            self.text.append((current.name, value))


def nest_form_fields(items: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Rebuild nested objects from bracketed part names.

    ``a[b][c]=1`` becomes ``{"a": {"b": {"c": "1"}}}`` and ``t[]=x`` appends to a list.
    A name given twice, or both plain and bracketed, is a 400 naming it.
    """
    result: dict[str, Any] = {}
    for name, value in items:
        match = _BRACKETED.match(name)
        path = [match.group("head"), *_SEGMENT.findall(match.group("rest"))] if match else [name]
        if len(path) > MAX_DEPTH:
            raise InvalidRequest(
                f"Form part name '{name[:64]}…' is nested more than {MAX_DEPTH} levels deep.",
                param=name[:64],
                code="invalid_multipart",
            )
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
