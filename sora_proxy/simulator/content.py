"""``GET``/``HEAD /v1/videos/<id>/content``: a finished video's bytes, streamed.

Every answer carries ``Content-Length``, ``Accept-Ranges``, ``ETag``, ``Last-Modified`` (the
video's ``completed_at``) and ``Content-Disposition: attachment; filename="<id>.mp4"`` (``.webp``
for the image variants). One ``Range`` (``bytes=a-b``, ``a-``, ``-n``) gives a 206 with
``Content-Range``; an unsatisfiable one a 416 with ``Content-Range: bytes */N``; a range list or
a malformed header is ignored (the whole body, 200), as RFC 9110 allows. ``If-Range`` (ETag or
date), ``If-None-Match`` and ``If-Modified-Since`` are honoured.

The body is a :class:`ContentStream` that keeps a :class:`StreamRecord` in
``state.content_streams`` up to date, and werkzeug's ``send_file`` is not used: large bodies
(``state.add_large_video``) are generated chunk by chunk, never held.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.http import http_date, parse_date, parse_etags, quote_etag, unquote_etag

from . import media
from .large import CHUNK_SIZE, large_body_chunks
from .records import StreamRecord
from .validation import SimError
from .views import get_state, not_found, render

bp = Blueprint("sora_simulator_content", __name__, url_prefix="/v1")

#: The WSGI environ key under which a download's :class:`ContentStream` is left, so the server
#: can end it when the client goes away before werkzeug gets to close it.
STREAM_ENVIRON_KEY = "sora_simulator.content_stream"

#: File name extension in ``Content-Disposition``, per variant.
EXTENSIONS = {"video": "mp4", "thumbnail": "webp", "spritesheet": "webp"}

_RANGE = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)", re.IGNORECASE)


@dataclass(frozen=True)
class _Content:
    """What a variant of a video serves: its length, type, ETag, and its bytes by slice."""

    length: int
    content_type: str
    etag: str
    chunks: Callable[[int, int], Iterator[bytes]]


class ContentStream:
    """The body iterable of one download; it keeps ``record`` current as chunks go out.

    A chunk counts in ``bytes_sent`` once the server asks for the next one (it has written the
    previous one by then); the end of iteration sets ``finished``; :meth:`close` before that
    sets ``closed_early``. werkzeug's server calls :meth:`close` after the last write or a
    failed one, and the simulator's request handler calls it when the client has gone away.
    """

    def __init__(self, chunks: Iterator[bytes], record: StreamRecord) -> None:
        self.chunks = chunks
        self.record = record
        self._pending = 0

    def __iter__(self) -> ContentStream:
        return self

    def __next__(self) -> bytes:
        self.record.bytes_sent += self._pending
        self._pending = 0
        if self.record.ended:
            raise StopIteration
        try:
            chunk = next(self.chunks)
        except StopIteration:
            self.record.finished = True
            raise
        self._pending = len(chunk)
        return chunk

    def close(self) -> None:
        """End the stream; before the last byte went out, that marks it ``closed_early``."""
        if not self.record.finished:
            self.record.closed_early = True
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def _slices(data: bytes, start: int, end: int) -> Iterator[bytes]:
    for position in range(start, end, CHUNK_SIZE):
        yield data[position : min(position + CHUNK_SIZE, end)]


def _content(video: dict[str, Any], variant: str) -> _Content:
    large = video.get("_large", {}).get(variant)
    if large is not None:
        size, seed = large
        etag = hashlib.sha256(f"large/{variant}/{size}/{seed}".encode()).hexdigest()[:32]
        chunks = functools.partial(large_body_chunks, size, seed)
        return _Content(size, media.VARIANTS[variant][1], etag, chunks)
    data, content_type, etag = media.load(variant)
    return _Content(len(data), content_type, etag, functools.partial(_slices, data))


def byte_range(header: str | None, length: int) -> tuple[int, int] | None:
    """Return the ``(start, end)`` (end exclusive) a ``Range`` header asks of ``length`` bytes.

    ``None`` means "serve it all": no header, a malformed one, or several ranges. An
    unsatisfiable range raises the 416 :class:`SimError`, carrying ``Content-Range``.
    """
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) + match.group(2) == "":
        return None
    first, last = match.groups()
    if first and last and int(last) < int(first):
        return None
    start = max(length - int(last), 0) if not first else int(first)
    end = length if not (first and last) else min(int(last) + 1, length)
    if start >= length or (not first and int(last) == 0):
        raise SimError(
            416,
            f"Requested range not satisfiable: '{header}' of {length} bytes.",
            code="range_not_satisfiable",
            headers={"Content-Range": f"bytes */{length}"},
        )
    return start, end


def _not_modified(etag: str, last_modified: int) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        return parse_etags(if_none_match).contains_weak(etag)
    since = parse_date(request.headers.get("If-Modified-Since"))
    return since is not None and since.timestamp() >= last_modified


def _range_applies(etag: str, last_modified: int) -> bool:
    """Whether ``If-Range`` (if sent) still matches, so a ``Range`` may be honoured."""
    value = request.headers.get("If-Range", "").strip()
    if not value:
        return True
    if value.startswith(('"', "W/")):
        tag, weak = unquote_etag(value)
        return not weak and tag == etag
    date = parse_date(value)
    return date is not None and int(date.timestamp()) == last_modified


@bp.route("/videos/<video_id>/content", methods=["GET", "HEAD"])
def download_content(video_id: str) -> Response:
    """Serve a finished video's MP4, thumbnail or spritesheet (see the module docstring)."""
    state = get_state()
    video = state.get_video(video_id)
    if video is None:
        raise not_found(video_id)
    variant = request.args.get("variant", "video")
    if variant not in media.VARIANTS:
        options = ", ".join(f"'{name}'" for name in media.VARIANTS)
        message = f"Invalid value: '{variant}'. Supported values are: {options}."
        raise SimError(400, message, param="variant", code="invalid_value")
    public = render(video, state.seconds_per_step)
    if public["status"] == "failed":
        message = f"Video '{video_id}' failed; it has no content to download."
        raise SimError(400, message, param="video_id", code="video_failed")
    if public["status"] != "completed":
        message = f"Video is not ready yet, use GET /v1/videos/{video_id} to check its status."
        raise SimError(400, message, param="video_id", code="video_not_ready")

    content = _content(video, variant)
    last_modified: int = public["completed_at"]
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": quote_etag(content.etag),
        "Last-Modified": http_date(last_modified),
        "Content-Disposition": f'attachment; filename="{video_id}.{EXTENSIONS[variant]}"',
    }
    if _not_modified(content.etag, last_modified):
        return Response(status=304, headers=headers)
    span = None
    if _range_applies(content.etag, last_modified):
        span = byte_range(request.headers.get("Range"), content.length)
    start, end = span or (0, content.length)
    headers["Content-Type"] = content.content_type
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{content.length}"
    status = 200 if span is None else 206

    if request.method == "HEAD":
        response = Response(b"", status=status, headers=headers)
    else:
        record = StreamRecord(video_id, variant, start, end - start, content.length)
        state.add_stream(record)
        stream = ContentStream(content.chunks(start, end), record)
        request.environ[STREAM_ENVIRON_KEY] = stream
        response = Response(stream, status=status, headers=headers, direct_passthrough=True)
    response.headers["Content-Length"] = str(end - start)
    return response
