"""The WSGI layer in front of the simulator app: record every request, then inject failures.

The body is read straight off ``wsgi.input`` before Flask parses anything, so the record holds
the bytes exactly as they came off the wire (after the server undid any chunked transfer
coding). The app then gets the same bytes back from a rewound spool file.

Large uploads stay cheap: the body goes to a temporary file as it arrives (only its first
:data:`MAX_RECORDED_BODY` bytes are kept in the record), and each file part is hashed while it
is parsed, keeping only its head. A few hundred MB upload costs about 2 x 64 MiB of memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, cast
from urllib.parse import parse_qs

from werkzeug.datastructures import EnvironHeaders
from werkzeug.formparser import parse_form_data
from werkzeug.http import parse_options_header

from .failures import apply_failure
from .records import MAX_RECORDED_BODY, RecordedFile, RecordedRequest
from .state import SimulatorState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MAX_RECORDED_BODY", "RecordingMiddleware"]

_CHUNK = 1024 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024


class RecordingMiddleware:
    """Wrap ``app`` so each request is recorded into ``state`` and may hit an armed failure.

    :param app: the simulator's own WSGI app (``flask_app.wsgi_app``).
    :param state: where records go and where failures are armed.
    """

    def __init__(self, app: WSGIApplication, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        spool, record = _capture(environ)
        self.state.record(record)
        environ["wsgi.input"] = spool
        environ["CONTENT_LENGTH"] = str(record.body_length)
        # The spool ends where the body ends. Saying so keeps a chunked body readable: with
        # Transfer-Encoding: chunked werkzeug ignores Content-Length and trusts only this flag.
        environ["wsgi.input_terminated"] = True

        failure = self.state.take_failure(record.method, record.path)
        if failure is None:
            return _Timed(self.app(environ, start_response), record)
        return _Timed(apply_failure(failure, self.app, environ, start_response), record)


class _Timed:
    """The answer's body, noting in the record when it is done (closed by the server)."""

    def __init__(self, body: Iterable[bytes], record: RecordedRequest) -> None:
        self._body = body
        self._record = record

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._record.answered_at = time.time()


class _FileSink(io.RawIOBase):
    """Where the form parser writes one file part: hashed and counted, only its head kept."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        # BytesIO.getvalue() hands its buffer over without a copy: no second 64 MiB at the end.
        self.head = io.BytesIO()
        self.size = 0
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        room = self.limit - self.head.tell()
        if room > 0:
            self.head.write(data[:room])
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # the parser rewinds each part when it is done; nothing to do here

    def recorded(self, filename: str | None, content_type: str | None) -> RecordedFile:
        """The :class:`RecordedFile` for what was written."""
        data = self.head.getvalue()
        self.head = io.BytesIO()
        return RecordedFile(
            filename, content_type, data, self.size, self.digest.hexdigest(), self.size > len(data)
        )


def _capture(environ: WSGIEnvironment) -> tuple[IO[bytes], RecordedRequest]:
    """Read the whole body into a spool file and build the record of this request."""
    received_at = time.time()
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        remaining: int | None = None
    else:
        try:
            remaining = max(int(environ.get("CONTENT_LENGTH") or 0), 0)
        except ValueError:
            remaining = 0

    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
    digest = hashlib.sha256()
    length = 0
    while remaining is None or remaining > 0:
        chunk = stream.read(_CHUNK if remaining is None else min(_CHUNK, remaining))
        if not chunk:
            break
        spool.write(chunk)
        digest.update(chunk)
        length += len(chunk)
        if remaining is not None:
            remaining -= len(chunk)
    spool.seek(0)
    head = spool.read(MAX_RECORDED_BODY)
    spool.seek(0)

    record = RecordedRequest(
        received_at=received_at,
        method=environ.get("REQUEST_METHOD", "GET"),
        path=environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
        headers=dict(EnvironHeaders(environ)),
        body=head,
        body_length=length,
        body_sha256=digest.hexdigest(),
        body_truncated=length > MAX_RECORDED_BODY,
    )
    _parse_into(record, environ, spool, length)
    spool.seek(0)
    return spool, record


def _parse_into(
    record: RecordedRequest, environ: WSGIEnvironment, spool: IO[bytes], length: int
) -> None:
    """Fill ``record.form``, ``files`` or ``json`` from the spooled body (left empty if bad)."""
    mimetype, _ = parse_options_header(environ.get("CONTENT_TYPE", ""))
    if mimetype == "application/json":
        try:
            record.json = json.loads(record.body)
        except ValueError:
            record.json = None
        return
    if mimetype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return
    copy = dict(environ)
    copy["wsgi.input_terminated"] = True
    copy["wsgi.input"] = spool
    copy["CONTENT_LENGTH"] = str(length)
    limit = MAX_RECORDED_BODY

    def sink(*_args: object, **_kwargs: object) -> IO[bytes]:
        return cast(IO[bytes], _FileSink(limit))

    try:
        _, form, files = parse_form_data(copy, stream_factory=sink, silent=False)
    except Exception:
        return
    record.form = form.to_dict(flat=False)
    record.files = {
        name: [
            cast(_FileSink, part.stream).recorded(part.filename, part.content_type)
            for part in parts
        ]
        for name, parts in files.lists()
    }
