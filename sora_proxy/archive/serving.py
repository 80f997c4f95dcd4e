"""Serving an archived object over HTTP: validators, conditional requests and byte ranges.

Headers are decided from :class:`~sora_proxy.archive.base.ArchivedObject` alone; the object
is opened only when a body is sent, so a ``HEAD``, a ``304`` or a ``416`` costs the backend
nothing. The body is streamed, never buffered.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Literal

from flask import Response
from werkzeug.datastructures import Headers
from werkzeug.http import http_date, parse_date, parse_range_header
from werkzeug.sansio.http import is_resource_modified

from ..errors import InvalidRequest
from .base import DEFAULT_CONTENT_TYPE, Archive, ArchivedObject

log = logging.getLogger("sora_proxy.archive")

#: ``private``: a video belongs to the caller who made it, so a shared cache (a CDN, a
#: corporate proxy) must not hand it to anyone else. An hour: the bytes under a key never
#: change, so a player seeking around one video reuses what it has, while a deleted video
#: leaves the caller's own caches soon after; past that, the ETag makes revalidation a
#: ``304`` that never opens the object.
CACHE_CONTROL = "private, max-age=3600"

Span = tuple[int, int] | Literal["whole", "unsatisfiable"]
#: Sends the body elsewhere (nginx, :mod:`sora_proxy.handoff`) given the decided headers:
#: the answer to return, or ``None`` to stream it here after all.
HandOff = Callable[[Headers], Response | None]


class ArchivedResponse(Response):
    """A response whose ``Content-Type`` is only the one set (none on a ``304``/``416``)."""

    default_mimetype = None


def archived_response(
    archive: Archive,
    obj: ArchivedObject,
    incoming: Headers,
    *,
    method: str,
    hand_off: HandOff | None = None,
) -> Response:
    """``obj`` answered to a request with headers ``incoming`` (a ``GET`` or a ``HEAD``).

    - ``If-None-Match`` (weak comparison, ``*`` included) naming ``obj``'s ETag, or, without
      it, ``If-Modified-Since`` not before ``stored_at``: ``304`` with the validators.
    - One ``Range`` (``bytes=a-b``, ``a-``, ``-n``): ``206`` with ``Content-Range``; a range
      starting past the end: ``416`` with ``Content-Range: bytes */size``. ``If-Range``
      honours the range only when it names the ETag (strong comparison) or a date not
      before ``Last-Modified``; otherwise the whole object is sent.
    - Several ranges, a malformed one or another unit: the whole object, ``200`` (allowed by
      RFC 9110 §14.2; multipart/byteranges answers are rare and not worth their cost here).
    - ``HEAD``: the same status and headers, no body, nothing read.

    :param hand_off: when a ``GET``'s body is to be sent and nginx, answering the client's
        own ``Range`` and ``If-Range`` itself, picks the same bytes (see
        :func:`_nginx_agrees`), called with the headers decided so far (ETag,
        Last-Modified, Cache-Control, Content-Type); its answer is returned unless ``None``.
    """
    last_modified = datetime.fromtimestamp(int(obj.stored_at), UTC)
    headers = Headers(
        {
            "ETag": f'"{obj.etag}"',
            "Last-Modified": http_date(last_modified),
            "Cache-Control": CACHE_CONTROL,
            "Accept-Ranges": "bytes",
        }
    )
    unchanged = not is_resource_modified(
        http_if_none_match=incoming.get("If-None-Match"),
        http_if_modified_since=incoming.get("If-Modified-Since"),
        etag=obj.etag,
        last_modified=last_modified,
    )
    if unchanged:
        return ArchivedResponse(status=304, headers=headers)
    span = _span(obj, incoming, last_modified)
    if span == "unsatisfiable":
        raise InvalidRequest(
            f"Requested range not satisfiable: '{incoming.get('Range')}' of {obj.size} bytes.",
            param="Range",
            code="range_not_satisfiable",
            status=416,
            headers={"Content-Range": f"bytes */{obj.size}", **headers},
        )
    headers["Content-Type"] = obj.content_type or DEFAULT_CONTENT_TYPE
    if (
        hand_off is not None
        and method == "GET"
        and _nginx_agrees(span, incoming, obj, last_modified)
    ):
        handed = hand_off(headers)
        if handed is not None:
            return handed
    if span == "whole":
        start, stop, status = 0, obj.size, 200
    else:
        (start, stop), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{obj.size}"
    headers["Content-Length"] = str(stop - start)
    if method == "HEAD" or stop == start:
        return ArchivedResponse(status=status, headers=headers)
    body = _body(archive.read(obj.key, start, stop - 1), stop - start, obj.key)
    return ArchivedResponse(body, status=status, headers=headers, direct_passthrough=True)


def _span(obj: ArchivedObject, incoming: Headers, last_modified: datetime) -> Span:
    """The bytes asked for, as ``(start, stop)`` with ``stop`` exclusive."""
    requested = incoming.get("Range")
    if not requested:
        return "whole"
    if_range = incoming.get("If-Range")
    if if_range is not None:
        # If-Range uses the strong comparison, which a weak tag never passes (RFC 9110 §13.1.5).
        if if_range.strip().startswith("W/") or is_resource_modified(
            http_range=requested,
            http_if_range=if_range,
            etag=obj.etag,
            last_modified=last_modified,
            ignore_if_range=False,
        ):
            return "whole"
    parsed = parse_range_header(requested)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return "whole"
    start, stop = parsed.ranges[0]
    if start < 0:  # the last -start bytes; all of them when the object is shorter
        return (max(0, obj.size + start), obj.size) if obj.size else "unsatisfiable"
    if start >= obj.size:
        return "unsatisfiable"
    return start, obj.size if stop is None else min(stop, obj.size)


def _nginx_agrees(
    span: Span, incoming: Headers, obj: ArchivedObject, last_modified: datetime
) -> bool:
    """Whether nginx's static files (``max_ranges 1``, the proxy's ETag and Last-Modified
    added back) answer the client's own ``Range``/``If-Range`` with the bytes of ``span``.

    They agree without a ``Range``, and on one valid range whose ``If-Range`` (if any) is
    the ETag itself or exactly the Last-Modified date. Where the proxy sends the whole
    object despite a ``Range`` (malformed, several, a failed ``If-Range``), nginx might
    answer 416 or a range: such rare requests are streamed by the proxy.
    """
    if not incoming.get("Range"):
        return True
    if span == "whole":
        return False
    if_range = (incoming.get("If-Range") or "").strip()
    if not if_range:
        return True
    if if_range.endswith('"'):
        return if_range == f'"{obj.etag}"'
    return parse_date(if_range) == last_modified


def _body(chunks: Iterator[bytes], length: int, key: str) -> Iterator[bytes]:
    """Exactly ``length`` bytes of ``chunks``, closing them when done or abandoned.

    Headers are sent by then, so a read that fails or comes up short cannot change the
    status: the connection is reset instead, so the caller sees a truncated transfer rather
    than a silently short file (a reset is what WSGI servers take as "drop this connection").
    """
    sent = 0
    try:
        for chunk in chunks:
            chunk = chunk[: length - sent]
            sent += len(chunk)
            yield chunk
            if sent == length:
                return
    except Exception as error:
        log.warning("reading %s from the archive broke off after %d bytes: %s", key, sent, error)
        raise ConnectionResetError(errno.ECONNRESET, "archive read broke off") from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if sent < length:
        log.warning("%s in the archive ended after %d of %d bytes", key, sent, length)
        raise ConnectionResetError(errno.ECONNRESET, "archived object shorter than announced")
