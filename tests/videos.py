"""Videos made on the fly for upload tests and benchmarks: whole containers of any size.

The proxy walks an upload's container structure (``sora_proxy.containers``), so a large test
file must be a real MP4 all the way to its last byte, not a real MP4 repeated.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

from sora_proxy.simulator.media import load as load_asset

MB = 1024 * 1024
MP4, _, _ = load_asset("video")


def _boxes(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The top-level boxes of a small MP4 with 32-bit sizes: (type, whole box)."""
    position = 0
    while position < len(data):
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        yield kind, data[position : position + size]
        position += size


_SAMPLE = dict(_boxes(MP4))
#: The sample's ``ftyp`` and ``moov``; its ``free`` box is where an ``mdat`` header may grow
#: to 64 bits, so the media keeps the offsets ``moov`` gives them either way.
_MOVIE = _SAMPLE[b"ftyp"] + _SAMPLE[b"moov"]
_MEDIA = _SAMPLE[b"mdat"][8:]
MIN_MP4_SIZE = len(_MOVIE) + 16 + len(_MEDIA)


def mp4_head(size: int) -> bytes:
    """The first bytes of a ``size``-byte MP4: the sample's ``ftyp`` and ``moov``, then one
    ``mdat`` running to byte ``size`` that starts with the sample's media. Whatever follows
    the head up to ``size`` is media data, so any bytes make a whole, playable file."""
    if size < MIN_MP4_SIZE:
        raise ValueError(f"an MP4 made from the sample needs at least {MIN_MP4_SIZE} bytes")
    box = size - len(_MOVIE)
    if box - 8 < 1 << 32:
        return _MOVIE + struct.pack(">I4sI4s", 8, b"free", box - 8, b"mdat") + _MEDIA
    return _MOVIE + struct.pack(">I4sQ", 1, b"mdat", box) + _MEDIA


def mp4_chunks(size: int, block: int = MB) -> Iterator[bytes]:
    """A whole ``size``-byte MP4 (see :func:`mp4_head`) in chunks of at most ``block`` bytes,
    never held in memory: after the head, the media data repeats the sample file."""
    head = mp4_head(size)
    filler = (MP4 * (block // len(MP4) + 1))[:block]
    yield head
    left = size - len(head)
    while left > 0:
        piece = filler if left >= block else filler[:left]
        yield piece
        left -= len(piece)


class VideoUpload:
    """A multipart body with text parts and a ``video`` file of ``size`` bytes, generated as
    it is sent (never held in memory) and sent with a Content-Length (``len()``).

    The file is a whole MP4 of exactly ``size`` bytes (:func:`mp4_chunks`), or, with
    ``chunks``, whatever those chunks hold (their total must be ``size``). ``sha256`` is the
    file's digest once the body has been iterated.
    """

    def __init__(
        self,
        size: int,
        fields: dict[str, str] | None = None,
        boundary: str = "video-upload-boundary",
        chunks: Iterator[bytes] | None = None,
    ) -> None:
        self.size = size
        self.content_type = f"multipart/form-data; boundary={boundary}"
        text = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in (fields or {"prompt": "More rain"}).items()
        )
        self._head = (
            text + f'--{boundary}\r\nContent-Disposition: form-data; name="video"; '
            'filename="big.mp4"\r\nContent-Type: video/mp4\r\n\r\n'
        ).encode()
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._chunks = chunks
        self._digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        self._digest = hashlib.sha256()
        yield self._head
        sent = 0
        for chunk in self._chunks if self._chunks is not None else mp4_chunks(self.size):
            self._digest.update(chunk)
            sent += len(chunk)
            yield chunk
        assert sent == self.size, (sent, self.size)
        yield self._tail

    def __len__(self) -> int:
        return len(self._head) + self.size + len(self._tail)

    @property
    def sha256(self) -> str:
        """The video file's digest (valid after the body was sent)."""
        return self._digest.hexdigest()


def ebml_element(element_id: int, payload: bytes = b"", *, unknown_size: bool = False) -> bytes:
    """One EBML element: its ID as written, an 8-byte size (or unknown), then ``payload``."""
    raw_id = element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
    size = (
        b"\x01\xff\xff\xff\xff\xff\xff\xff"
        if unknown_size
        else ((1 << 56) | len(payload)).to_bytes(8, "big")
    )
    return raw_id + size + payload


def webm(*, live: bool = False, doc_type: bytes = b"webm") -> bytes:
    """A small, structurally whole WebM: EBML header, a Segment with Info, Tracks (one VP8
    track) and two Clusters of one SimpleBlock each. ``live`` writes the Segment and Clusters
    with an unknown size, as a live recorder does."""
    header = ebml_element(
        0x1A45DFA3,
        b"".join(
            (
                ebml_element(0x4286, b"\x01"),
                ebml_element(0x42F7, b"\x01"),
                ebml_element(0x42F2, b"\x04"),
                ebml_element(0x42F3, b"\x08"),
                ebml_element(0x4282, doc_type),
                ebml_element(0x4287, b"\x04"),
                ebml_element(0x4285, b"\x02"),
            )
        ),
    )
    info = ebml_element(0x1549A966, ebml_element(0x2AD7B1, (1000000).to_bytes(3, "big")))
    track = ebml_element(
        0xAE,
        b"".join(
            (
                ebml_element(0xD7, b"\x01"),
                ebml_element(0x83, b"\x01"),
                ebml_element(0x86, b"V_VP8"),
                ebml_element(0xE0, ebml_element(0xB0, b"\x40") + ebml_element(0xBA, b"\x30")),
            )
        ),
    )
    clusters = b"".join(
        ebml_element(
            0x1F43B675,
            ebml_element(0xE7, bytes([n]))
            + ebml_element(0xA3, b"\x81\x00\x00\x80" + bytes(range(40))),
            unknown_size=live,
        )
        for n in range(2)
    )
    segment = info + ebml_element(0x1654AE6B, track) + clusters
    return header + ebml_element(0x18538067, segment, unknown_size=live)
