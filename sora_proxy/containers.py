"""A video's container structure, checked as its bytes stream past: MP4/QuickTime and WebM.

Recognising a video by its first bytes is not enough: an ``ftyp`` box followed by noise looks
like an MP4 and would be paid for. :class:`ContainerWalker` reads only the headers of the
top-level structure (MP4 boxes; the EBML header, the Segment and its children in WebM) and
skips every payload by counting, so its memory is a few bytes whatever the file's size, and it
costs a handful of operations per megabyte. It refuses a file whose structure does not chain
exactly from the first byte to the last, and one that lacks the part describing its tracks
(MP4 ``moov``, WebM ``Tracks``) or any media data (MP4 ``mdat``, WebM ``Cluster``): without
them no upstream can make anything of it, and the check costs nothing.

It does not decode anything: a file that passes is a whole container, not necessarily a
playable video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import InvalidRequest

_FTYP = b"ftyp"
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"

# EBML and Matroska element IDs (with their length marker bits, as written in files).
_EBML = 0x1A45DFA3
_DOC_TYPE = 0x4282
_SEGMENT = 0x18538067
_CLUSTER = 0x1F43B675
_TRACKS = 0x1654AE6B
#: Matroska lets only these master elements have an unknown size (live recording).
_UNKNOWN_SIZE_ALLOWED = {_SEGMENT: "Segment", _CLUSTER: "Cluster"}
_DOC_TYPES = (b"webm", b"matroska")
#: Longer than any DocType a WebM/Matroska file has, so its value is read into a few bytes.
_MAX_DOC_TYPE = 32


def sniff_video_type(head: bytes) -> str | None:
    """The MIME type of a video by its first bytes: MP4, QuickTime or WebM, else ``None``."""
    if len(head) >= 12 and head[4:8] == _FTYP:
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(_EBML_MAGIC):
        return "video/webm"
    return None


class _Walk:
    """The byte mechanics both formats share: gather a header of a few bytes, parse it, then
    skip its payload by counting (or, for a container, walk into it)."""

    kind = ""

    def __init__(self, param: str, max_size: int | None) -> None:
        self.param = param
        self.max_size = max_size
        self.position = 0
        self._start = 0
        self._pending = bytearray()
        self._want = 8
        self._skip = 0
        self._to_end = False

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        index, size = 0, len(view)
        while index < size:
            if self._to_end:
                self.position += size - index
                return
            if self._skip:
                step = min(self._skip, size - index)
                self._skip -= step
                index += step
                self.position += step
                if not self._skip:
                    self._skipped()
                continue
            if not self._pending:
                self._start = self.position
            step = min(self._want - len(self._pending), size - index)
            self._pending += view[index : index + step]
            index += step
            self.position += step
            if len(self._pending) == self._want:
                self._parse(bytes(self._pending))

    def _next(self, want: int) -> None:
        """The current header is done: gather ``want`` bytes for the next one."""
        self._pending.clear()
        self._want = want

    def _check_end(self, what: str, end: int) -> None:
        if self.max_size is not None and end > self.max_size:
            raise self._refuse(
                f"{what} at byte {self._start} ends at byte {end}, past the largest possible "
                f"end of the file ({self.max_size})"
            )

    def _refuse(self, why: str) -> InvalidRequest:
        return InvalidRequest(
            f"'{self.param}': {why}: the file is not a whole {self.kind}.",
            param=self.param,
            code="invalid_video",
        )

    def _parse(self, header: bytes) -> None:
        raise NotImplementedError

    def _skipped(self) -> None:
        """A payload has been skipped to its end."""

    def finish(self) -> None:
        raise NotImplementedError


class _Mp4(_Walk):
    """Top-level ISO BMFF/QuickTime boxes: ``ftyp`` first, chained to the last byte, one
    ``moov`` and some ``mdat``."""

    kind = "MP4"

    def __init__(self, param: str, max_size: int | None) -> None:
        super().__init__(param, max_size)
        self._boxes = 0
        self._movies = 0
        self._media = False
        self._last = ""

    def _parse(self, header: bytes) -> None:
        size = int.from_bytes(header[:4], "big")
        kind = header[4:8]
        name = kind.decode("latin-1")
        if not all(0x20 <= byte <= 0x7E for byte in kind):
            raise self._refuse(f"the MP4 box {name!r} at byte {self._start} is not a box type")
        if size == 1 and len(header) == 8:
            self._want = 16  # a 64-bit largesize follows the type
            return
        length = len(header)
        if size == 1:
            size = int.from_bytes(header[8:16], "big")
        if self._boxes == 0 and (kind != _FTYP or 0 < size < 16):
            raise self._refuse("it does not start with an 'ftyp' box")
        if size < length and not (size == 0 and length == 8):
            raise self._refuse(
                f"the MP4 box {name!r} at byte {self._start} is {size} bytes long, shorter "
                f"than its own {length}-byte header"
            )
        self._boxes += 1
        self._last = name
        if kind == b"moov":
            self._movies += 1
            if self._movies > 1:
                raise self._refuse(f"a second 'moov' box starts at byte {self._start}")
        self._media = self._media or kind == b"mdat"
        self._next(8)
        if size == 0:
            self._to_end = True  # "to the end of the file": by definition the last box
            return
        self._check_end(f"the MP4 box {name!r}", self._start + size)
        self._skip = size - length

    def finish(self) -> None:
        if self._pending:
            raise self._refuse(f"it ends inside a box header at byte {self._start}")
        if self._skip:
            raise self._refuse(
                f"the MP4 box {self._last!r} at byte {self._start} needs {self._skip} more "
                f"bytes than the file has"
            )
        if not self._movies:
            raise self._refuse("it has no 'moov' box (the description of its tracks)")
        if not self._media:
            raise self._refuse("it has no 'mdat' box (the media data)")


class _Ebml(_Walk):
    """EBML elements: the EBML header (DocType webm or matroska) first, then Segments whose
    children chain exactly to each known end and to the file's last byte, with ``Tracks`` and
    a ``Cluster``."""

    kind = "WebM"

    def __init__(self, param: str, max_size: int | None) -> None:
        super().__init__(param, max_size)
        self._want = 1
        #: Ends of the known-size elements walked into (the EBML header, a Segment).
        self._ends: list[tuple[int, int]] = []
        self._elements = 0
        self._doc_type: bytes | None = None
        self._reading_doc_type = False
        self._segments = 0
        self._tracks = False
        self._clusters = False
        self._last = ""

    def _parse(self, header: bytes) -> None:
        if self._reading_doc_type:
            self._doc_type = header.rstrip(b"\x00")
            self._reading_doc_type = False
            self._next(1)
            self._close_parents()
            return
        id_length = _vint_length(header[0])
        if id_length > 4:
            raise self._refuse(
                f"the byte 0x{header[0]:02x} at {self._start} does not start an EBML element ID"
            )
        if len(header) <= id_length:
            self._want = id_length + 1
            return
        size_length = _vint_length(header[id_length])
        if size_length > 8:
            raise self._refuse(f"the element at byte {self._start} has an invalid size")
        if len(header) == id_length + 1 and size_length > 1:
            self._want = id_length + size_length
            return
        element = int.from_bytes(header[:id_length], "big")
        name = f"0x{element:X}"
        if element & _ones(id_length) in (0, _ones(id_length)):
            raise self._refuse(f"the element ID {name} at byte {self._start} is reserved")
        raw = int.from_bytes(header[id_length:], "big") & _ones(size_length)
        unknown = raw == _ones(size_length)
        if self._elements == 0 and element != _EBML:
            raise self._refuse("it does not start with an EBML header")
        self._elements += 1
        self._last = name
        end = None if unknown else self.position + raw
        if self._ends and (end or self.position) > self._ends[-1][0]:
            raise self._refuse(
                f"the element {name} at byte {self._start} runs past the end of the element "
                f"holding it (byte {self._ends[-1][0]})"
            )
        self._next(1)
        if unknown:
            if element not in _UNKNOWN_SIZE_ALLOWED:
                raise self._refuse(
                    f"the element {name} at byte {self._start} has an unknown size, which only "
                    "a Segment or Cluster may have"
                )
            # Live-recorded: the element's children follow as elements, up to the end of the
            # element holding it (or of the file); they are walked like any other.
            self._segments += element == _SEGMENT
            self._clusters = self._clusters or element == _CLUSTER
            return
        assert end is not None
        self._check_end(f"the element {name}", end)
        if element in (_EBML, _SEGMENT):
            self._segments += element == _SEGMENT
            self._ends.append((end, element))
        elif element == _DOC_TYPE and self._ends and self._ends[-1][1] == _EBML:
            if not 0 < raw <= _MAX_DOC_TYPE:
                raise self._refuse(f"its DocType is {raw} bytes long")
            self._reading_doc_type = True
            self._want = raw
            return
        else:
            self._tracks = self._tracks or element == _TRACKS
            self._clusters = self._clusters or element == _CLUSTER
            self._skip = raw
        self._close_parents()

    def _skipped(self) -> None:
        self._close_parents()

    def _close_parents(self) -> None:
        while self._ends and self.position == self._ends[-1][0]:
            _, element = self._ends.pop()
            if element == _EBML and self._doc_type not in _DOC_TYPES:
                doc_type = (self._doc_type or b"").decode("latin-1")
                raise self._refuse(f"its EBML DocType is {doc_type!r}, not webm or matroska")

    def finish(self) -> None:
        if self._pending or self._reading_doc_type:
            raise self._refuse(f"it ends inside the element header at byte {self._start}")
        if self._skip:
            raise self._refuse(
                f"the element {self._last} at byte {self._start} needs {self._skip} more bytes "
                "than the file has"
            )
        if self._ends:
            end, element = self._ends[-1]
            raise self._refuse(
                f"the element 0x{element:X} should end at byte {end}, but the file ends at "
                f"byte {self.position}"
            )
        if not self._segments:
            raise self._refuse("it has no Segment")
        if not self._tracks:
            raise self._refuse("it has no Tracks element (the description of its tracks)")
        if not self._clusters:
            raise self._refuse("it has no Cluster (the media data)")


def _vint_length(first: int) -> int:
    """The length of an EBML variable-length integer from its first byte (9: invalid)."""
    return 9 - first.bit_length()


def _ones(length: int) -> int:
    """The value bits of a ``length``-byte EBML variable-length integer, all set."""
    return (1 << (7 * length)) - 1


class ContainerWalker:
    """Checks that a video's bytes form a whole MP4/QuickTime or WebM/Matroska container.

    Feed the file's bytes in order with :meth:`feed` (any chunking), then call :meth:`finish`
    at its end. Either raises :class:`~sora_proxy.errors.InvalidRequest` (``code:
    invalid_video``, ``param``) as soon as the structure is known to be wrong.

    :param param: the request field the file came in, named in the error.
    :param max_size: the file cannot be larger than this (e.g. the body's length): an element
        that claims to end past it is refused at once instead of at the end.
    """

    def __init__(self, param: str = "video", max_size: int | None = None) -> None:
        self.param = param
        self.max_size = max_size
        self._head = bytearray()
        self._walk: _Walk | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Walk the next bytes of the file."""
        if self._walk is None:
            view = memoryview(data)
            taken = min(8 - len(self._head), len(view))
            self._head += view[:taken]
            if len(self._head) < 8 and self._head[:4] != _EBML_MAGIC:
                return
            self._walk = self._start(bytes(self._head))
            self._walk.feed(self._head)
            data = view[taken:]
        self._walk.feed(data)

    def finish(self) -> None:
        """The file ended: refuse it unless its structure ended exactly here."""
        if self._walk is None:
            raise _not_a_video(self.param)
        self._walk.finish()

    def _start(self, head: bytes) -> _Walk:
        if head.startswith(_EBML_MAGIC):
            return _Ebml(self.param, self.max_size)
        if head[4:8] == _FTYP:
            return _Mp4(self.param, self.max_size)
        raise _not_a_video(self.param)


def _not_a_video(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' is not an MP4, QuickTime or WebM video.", param=param, code="invalid_video"
    )


def checked_video_chunks(
    first: bytes, chunks: Iterable[bytes], *, param: str = "video", max_size: int | None = None
) -> Iterator[bytes]:
    """``first`` and then ``chunks`` unchanged, walked by a :class:`ContainerWalker` as they
    are consumed; the last chunk is held back until the walk succeeded, so a consumer
    streaming them upstream never sends a whole body for a file that is refused.

    ``first`` is walked at once: a file wrong from its first bytes is refused by this call,
    before anything is sent.
    """
    walker = ContainerWalker(param, max_size)
    walker.feed(first)
    return _held_back(walker, first, chunks)


def _held_back(walker: ContainerWalker, first: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    held = first
    for chunk in chunks:
        walker.feed(chunk)
        if held:
            yield held
        held = chunk
    walker.finish()
    if held:
        yield held
