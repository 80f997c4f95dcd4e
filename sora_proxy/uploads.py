"""Video uploads forwarded as they arrive: never parsed into memory or spooled to disk.

A multipart body for ``edits``, ``extensions`` or ``characters`` needs no rewriting, so its bytes
go upstream unchanged while a streaming multipart decoder watches them pass. The text parts
before the video and the video's first bytes are checked *before* the upstream is contacted;
the rest is checked on the way (the video's container structure by
:class:`~sora_proxy.containers.ContainerWalker`), and the body's last chunk is held back until
the whole body has been seen and found valid, so the upstream never receives a complete
request that the proxy would have refused.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Request
from urllib3.fields import RequestField
from werkzeug.sansio.multipart import (
    Data,
    Epilogue,
    Field,
    File,
    MultipartDecoder,
    NeedData,
)

from .bodies import ClientStream, media_type, nest_form_fields
from .containers import ContainerWalker, checked_video_chunks, sniff_video_type
from .dialects import EncodedBody
from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from .fetch import FetchedStream
from .idempotency import fingerprint as request_fingerprint

#: Bytes read from the client per step; large enough to keep syscalls few on 100 MB uploads.
READ_SIZE = 1024 * 1024
#: Text parts are small; more than this before the video is not a real upload.
MAX_TEXT_BYTES = 1024 * 1024
#: Bytes of the video needed to recognise its container.
SNIFF_BYTES = 16

__all__ = [
    "StreamedUpload",
    "UploadHead",
    "checked_video_chunks",
    "multipart_stream",
    "sniff_video_type",
]


class Readable(Protocol):
    """Anything with ``read(size) -> bytes``: a request stream, a file."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes (``b""`` at the end)."""
        ...


@dataclass
class UploadHead:
    """What was seen before the upstream was contacted."""

    fields: dict[str, Any]
    file_name: str | None = None
    file_type: str | None = None
    complete: bool = False


@dataclass
class _Inspector:
    """Feeds bytes to a multipart decoder and remembers the parts' names and text values."""

    boundary: bytes
    file_param: str
    max_file_bytes: int | None = None
    decoder: MultipartDecoder = field(init=False)
    text: list[tuple[str, str]] = field(default_factory=list)
    current: Field | File | None = None
    buffer: bytearray = field(default_factory=bytearray)
    text_bytes: int = 0
    file_name: str | None = None
    file_head: bytearray = field(default_factory=bytearray)
    file_digest: Any = field(default_factory=hashlib.sha256)
    walker: ContainerWalker | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        # No memory limit inside the decoder: its buffer holds at most one read plus a few
        # held-back bytes (so a limit of one read would trip on them); text parts are capped
        # in _data instead, and file data is never kept.
        self.decoder = MultipartDecoder(self.boundary)

    def feed(self, chunk: bytes | None) -> None:
        try:
            self.decoder.receive_data(chunk)
            self._drain()
        except ValueError:
            raise InvalidRequest(
                "The multipart body is malformed.", code="invalid_multipart"
            ) from None

    def _drain(self) -> None:
        while True:
            event = self.decoder.next_event()
            if isinstance(event, NeedData):
                return
            if isinstance(event, Epilogue):
                self.finished = True
                return
            if isinstance(event, File):
                if event.name != self.file_param or self.file_name is not None:
                    raise InvalidRequest(
                        f"Unexpected file part '{event.name}'; send one '{self.file_param}' file.",
                        param=event.name or self.file_param,
                    )
                self.file_name = event.filename or self.file_param
                self.walker = ContainerWalker(self.file_param, self.max_file_bytes)
                self.current = event
            elif isinstance(event, Field):
                if not event.name:
                    raise InvalidRequest(
                        "Every multipart part needs a name.", code="invalid_multipart"
                    )
                self.current = event
                self.buffer.clear()
            elif isinstance(event, Data):
                self._data(event)

    def _data(self, event: Data) -> None:
        if isinstance(self.current, File):
            if len(self.file_head) < SNIFF_BYTES:
                self.file_head += event.data[: SNIFF_BYTES - len(self.file_head)]
            self.file_digest.update(event.data)
            assert self.walker is not None
            self.walker.feed(event.data)
            if not event.more_data:
                # The file's end is seen while reading the body's last chunk(s), which are
                # still held back: refusing here leaves the upstream an incomplete request.
                self.walker.finish()
            return
        self.text_bytes += len(event.data)
        if self.text_bytes > MAX_TEXT_BYTES:
            raise PayloadTooLarge(f"Text parts are larger than {MAX_TEXT_BYTES} bytes.")
        self.buffer += event.data
        if not event.more_data and isinstance(self.current, Field):
            try:
                value = bytes(self.buffer).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"Part '{self.current.name}' is not UTF-8 text.", param=self.current.name
                ) from None
            self.text.append((self.current.name, value))

    def done(self) -> bool:
        """Whether the closing boundary was seen."""
        return self.finished

    @property
    def sniffable(self) -> bool:
        return len(self.file_head) >= SNIFF_BYTES or (
            self.file_name is not None and not isinstance(self.current, File)
        )


class StreamedUpload:
    """A multipart request body relayed upstream as it arrives.

    :param stream: the client's body stream (``request.stream``).
    :param content_type: the client's ``Content-Type`` with its boundary, sent upstream as is.
    :param content_length: the client's ``Content-Length``, or ``None`` for a chunked body.
    :param max_bytes: the cap on the whole body (``SORA_PROXY_MAX_VIDEO_BYTES``).
    :param file_param: the one file part allowed (``video``).
    """

    def __init__(
        self,
        stream: Readable,
        content_type: str,
        boundary: str,
        content_length: int | None,
        *,
        max_bytes: int,
        file_param: str = "video",
    ) -> None:
        if content_length is not None and content_length > max_bytes:
            raise PayloadTooLarge(f"The upload is larger than the {max_bytes}-byte limit.")
        self.content_type = content_type
        self.content_length = content_length
        self._stream = stream
        self._max_bytes = max_bytes
        self._read_total = 0
        # The file is part of the body, so it is at most as long as the body may be.
        max_file_bytes = max_bytes if content_length is None else content_length
        self._inspector = _Inspector(boundary.encode("latin-1"), file_param, max_file_bytes)
        self._prefix: list[bytes] = []
        self._reads = self._inspected_reads()

    @property
    def bytes_read(self) -> int:
        """Body bytes read from the client so far."""
        return self._read_total

    def read_head(self) -> UploadHead:
        """Read until the video's first bytes (or the body's end) and check what came so far."""
        inspector = self._inspector
        for chunk in self._reads:
            self._prefix.append(chunk)
            if inspector.sniffable:
                break
        file_type = None
        if inspector.file_name is not None:
            file_type = sniff_video_type(bytes(inspector.file_head))
            if file_type is None:
                raise InvalidRequest(
                    f"'{inspector.file_param}' is not an MP4, QuickTime or WebM video.",
                    param=inspector.file_param,
                    code="invalid_video",
                )
        return UploadHead(
            nest_form_fields(inspector.text), inspector.file_name, file_type, inspector.finished
        )

    def fingerprint(self, route: str, head: UploadHead) -> str:
        """What this upload asks for, as far as is known before streaming: the text parts so
        far and the file's name and type. :meth:`digest` completes it once read."""
        return request_fingerprint(
            route, head.fields, {"file": f"{head.file_name}|{head.file_type}"}
        )

    def digest(self, route: str) -> str | None:
        """What the whole upload asked for (all text parts, the file's bytes), once read to
        the end; ``None`` before. Independent of the multipart boundary."""
        inspector = self._inspector
        if not inspector.finished:
            return None
        return request_fingerprint(
            route,
            nest_form_fields(inspector.text),
            {"file": inspector.file_digest.hexdigest()} if inspector.file_name else None,
        )

    def drain(self) -> None:
        """Read the rest of the body without sending it anywhere (to judge a replay)."""
        self._prefix = []
        for _ in self._reads:
            pass

    def body(self, check_fields: Callable[[dict[str, Any]], None]) -> Iterable[bytes]:
        """The whole body for the upstream, with a length when the client gave one.

        ``check_fields`` runs on all text parts once the body has been seen; if it raises, the
        final chunk is never sent and the upstream sees an incomplete request.
        """
        chunks = self._chunks(check_fields)
        if self.content_length is None:
            return chunks
        return _SizedIterable(chunks, self.content_length)

    def _chunks(self, check_fields: Callable[[dict[str, Any]], None]) -> Iterator[bytes]:
        held: bytes | None = None
        prefix, self._prefix = self._prefix, []
        for chunk in itertools.chain(prefix, self._reads):
            if held is not None:
                yield held
            held = chunk
        check_fields(nest_form_fields(self._inspector.text))
        if held is not None:
            yield held

    def _inspected_reads(self) -> Iterator[bytes]:
        """The client's body, read by read, each fed to the inspector; ends with the body."""
        inspector = self._inspector
        while not inspector.finished:
            chunk = self._read()
            inspector.feed(chunk or None)
            if chunk:
                yield chunk
            elif not inspector.done():  # feed() may have reached the closing boundary
                raise _ended_early()

    def _read(self) -> bytes:
        chunk = self._stream.read(READ_SIZE)
        self._read_total += len(chunk)
        if self._read_total > self._max_bytes:
            raise PayloadTooLarge(f"The upload is larger than the {self._max_bytes}-byte limit.")
        return chunk


def _ended_early() -> InvalidRequest:
    return InvalidRequest("The multipart body ended early.", code="invalid_multipart")


class _SizedIterable:
    """An iterable with ``len()``, so requests sends ``Content-Length`` instead of chunking."""

    def __init__(self, chunks: Iterator[bytes], length: int) -> None:
        self._chunks = chunks
        self._length = length

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def __len__(self) -> int:
        return self._length


def multipart_stream(
    fields: list[tuple[str, str]],
    file_param: str,
    filename: str,
    file_type: str,
    file_chunks: Iterable[bytes],
    file_length: int | None,
) -> tuple[Iterable[bytes], str]:
    """Encode text ``fields`` and one streamed file as multipart/form-data, lazily.

    Returns the body and its Content-Type; the body has a ``len()`` when ``file_length`` is
    known, so it goes upstream with a ``Content-Length``.
    """
    boundary = uuid.uuid4().hex
    head = bytearray()
    for name, value in fields:
        part = RequestField(name=name, data=value)
        part.make_multipart()
        head += f"--{boundary}\r\n".encode() + part.render_headers().encode("utf-8")
        head += value.encode("utf-8") + b"\r\n"
    file_part = RequestField(name=file_param, data=b"", filename=filename)
    file_part.make_multipart(content_type=file_type)
    head += f"--{boundary}\r\n".encode() + file_part.render_headers().encode("utf-8")
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield bytes(head)
        yield from file_chunks
        yield tail

    content_type = f"multipart/form-data; boundary={boundary}"
    if file_length is None:
        return chunks(), content_type
    return _SizedIterable(chunks(), len(head) + file_length + len(tail)), content_type


def streamed_upload(request: Request, *, max_bytes: int) -> StreamedUpload:
    """The request's multipart body as a :class:`StreamedUpload` (415/400 if it is not one)."""
    kind = media_type(request)
    if kind != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type '{kind or 'none'}' is not supported here; send "
            "multipart/form-data with a 'video' file part."
        )
    boundary = request.mimetype_params.get("boundary")
    if not boundary:
        raise InvalidRequest(
            "The multipart Content-Type has no boundary.", code="invalid_multipart"
        )
    return StreamedUpload(
        ClientStream(request.stream, max_bytes=None),
        request.headers["Content-Type"],
        boundary,
        request.content_length,
        max_bytes=max_bytes,
    )


_VIDEO_EXTENSIONS = {"video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm"}


def fetched_video_body(
    fields: list[tuple[str, str]], fetched: FetchedStream, *, param: str, max_bytes: int
) -> EncodedBody:
    """A multipart body of text ``fields`` and the video being fetched as part ``video``,
    streamed: its type sniffed from the first chunk, its structure walked as it goes, and its
    last chunk held back until the walk succeeded."""
    chunks = fetched.iter_chunks(READ_SIZE)
    first = next(chunks, b"")
    video_type = sniff_video_type(first)
    if video_type is None:
        raise InvalidRequest(
            f"{param} does not point at an MP4, QuickTime or WebM video.",
            param=param,
            code="invalid_video",
        )
    file_chunks = checked_video_chunks(
        first, chunks, param=param, max_size=fetched.content_length or max_bytes
    )
    filename = f"character.{_VIDEO_EXTENSIONS[video_type]}"
    content, content_type = multipart_stream(
        fields, "video", filename, video_type, file_chunks, fetched.content_length
    )
    return EncodedBody(content, content_type)
