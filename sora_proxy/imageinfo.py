"""What an image file's header says, read without decoding a single pixel.

Pillow allocates a whole frame before it decodes one, so the proxy reads the pixel size, and
what decoding will cost, from the container itself first: PNG's IHDR, JPEG's frame header
(SOFn), WebP's VP8/VP8L/VP8X chunk. :func:`check_png_chunks` walks a PNG through IEND checking
every chunk's CRC, which is how a PNG that needs no re-encoding is verified without inflating
its pixels.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass

from PIL import Image

#: The EXIF orientations that swap width and height (a transpose or a quarter turn).
SWAPPING_ORIENTATIONS = frozenset((5, 6, 7, 8))

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour type -> the bit depths it allows.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_JPEG_SOF = frozenset(
    (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)
)
_JPEG_PROGRESSIVE = frozenset((0xC2, 0xC6, 0xCA, 0xCE))
_JPEG_BARE_MARKERS = frozenset((0x01, 0xD8, *range(0xD0, 0xD8)))
_JPEG_FILL = re.compile(rb"\xff+")


class BadImage(ValueError):
    """The file is not a well-formed image of the format its magic bytes claim."""


@dataclass(frozen=True)
class ImageInfo:
    """An image's header: format, stored pixel size and what Pillow will decode it to.

    :param format: Pillow's format name: ``PNG``, ``JPEG`` or ``WEBP``.
    :param width: stored width (before any EXIF orientation).
    :param height: stored height.
    :param bytes_per_pixel: bytes per pixel of the mode Pillow decodes to (Pillow keeps 8-bit
        images of 2 to 4 bands in 4 bytes a pixel; a 16-bit PNG is decoded to 8 bits a band,
        except 16-bit grey, kept in 2).
    :param exif: the EXIF block, when the header holds one (PNG's may follow the pixels: see
        :func:`check_png_chunks`).
    :param progressive: a progressive JPEG (libjpeg then buffers every DCT coefficient).
    :param sampling: a JPEG's (horizontal, vertical) sampling factors per component.
    """

    format: str
    width: int
    height: int
    bytes_per_pixel: int
    exif: bytes | None = None
    progressive: bool = False
    sampling: tuple[tuple[int, int], ...] = ()

    @property
    def pixels(self) -> int:
        """Width times height."""
        return self.width * self.height


def read_info(data: bytes, image_format: str) -> ImageInfo:
    """The header of ``data``, whose magic bytes said it is ``image_format``.

    :raises BadImage: a header that is missing, truncated or malformed.
    """
    try:
        if image_format == "PNG":
            return _png_header(data)
        if image_format == "JPEG":
            return _jpeg_header(data)
        return _webp_header(data)
    except (struct.error, IndexError):
        raise BadImage("truncated header") from None


def orientation(exif: bytes | None) -> int:
    """The EXIF orientation (1 to 8) in an EXIF block; 1 when there is none or it is unreadable.

    An unreadable EXIF block is ignored rather than refused: the pixels are what matter, and
    the image is then sent as it is stored.
    """
    if not exif:
        return 1
    try:
        value = Image.Exif()
        value.load(exif)
        found = value.get(0x0112, 1)
    except Exception:  # any malformed EXIF (struct, key, value errors…) means "none"
        return 1
    return found if isinstance(found, int) and 1 <= found <= 8 else 1


def check_png_chunks(data: bytes) -> bytes | None:
    """Walk a PNG's chunks through IEND, checking each one's length and CRC.

    Catches truncation and damage anywhere in the file without inflating the pixels (the IDAT
    data is only checksummed). Returns the ``eXIf`` chunk's data, if any (it may come after
    the pixels, so only a full walk finds it).

    :raises BadImage: a truncated file, a bad CRC, a missing IHDR, IDAT or IEND.
    """
    view = memoryview(data)
    pos = len(_PNG_SIGNATURE)
    exif: bytes | None = None
    seen_idat = False
    first = True
    while True:
        if pos + 12 > len(data):
            raise BadImage("truncated PNG: no IEND chunk")
        (length,) = struct.unpack_from(">I", data, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 8 + length
        if length > 0x7FFFFFFF or end + 4 > len(data):
            raise BadImage("truncated PNG chunk")
        (crc,) = struct.unpack_from(">I", data, end)
        if zlib.crc32(view[pos + 4 : end]) != crc:
            raise BadImage(f"PNG chunk {kind!r} fails its CRC")
        if first and kind != b"IHDR":
            raise BadImage("PNG does not start with IHDR")
        first = False
        if kind == b"IDAT":
            seen_idat = True
        elif kind == b"eXIf" and exif is None:
            exif = bytes(view[pos + 8 : end])
        elif kind == b"IEND":
            if not seen_idat:
                raise BadImage("PNG has no image data")
            return exif
        pos = end + 4


def _png_header(data: bytes) -> ImageInfo:
    if data[12:16] != b"IHDR" or struct.unpack_from(">I", data, 8)[0] != 13:
        raise BadImage("PNG does not start with IHDR")
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if not width or not height or depth not in _PNG_DEPTHS.get(colour, ()) or interlace > 1:
        raise BadImage("PNG header is malformed")
    if colour == 0:
        per_pixel = 2 if depth == 16 else 1  # mode I;16, or L / 1
    elif colour == 3:
        per_pixel = 1  # mode P
    else:
        per_pixel = 4  # RGB, RGBA, LA (16-bit bands are decoded to 8 bits)
    return ImageInfo("PNG", width, height, per_pixel)


def _jpeg_header(data: bytes) -> ImageInfo:
    pos = 2
    exif: bytes | None = None
    while True:
        # Like Pillow, skip stray bytes between segments and any 0xFF fill before a marker.
        pos = data.find(b"\xff", pos)
        fill = _JPEG_FILL.match(data, max(pos, 0))
        if pos < 0 or fill is None:
            raise BadImage("JPEG has no frame header")
        pos = fill.end()
        marker = data[pos]
        pos += 1
        if marker in _JPEG_BARE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):
            raise BadImage("JPEG has no frame header before its scan")
        (length,) = struct.unpack_from(">H", data, pos)
        segment = data[pos + 2 : pos + length]
        if length < 2 or len(segment) != length - 2:
            raise BadImage("truncated JPEG segment")
        if marker == 0xE1 and exif is None and segment.startswith(b"Exif\x00\x00"):
            exif = segment
        elif marker in _JPEG_SOF:
            height, width, count = struct.unpack_from(">HHB", segment, 1)
            sampling = tuple(
                (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F) for i in range(count)
            )
            if not width or not height or not count or not all(h and v for h, v in sampling):
                raise BadImage("JPEG frame header is malformed")
            return ImageInfo(
                "JPEG",
                width,
                height,
                1 if count == 1 else 4,
                exif,
                progressive=marker in _JPEG_PROGRESSIVE,
                sampling=sampling,
            )
        pos += length


def _webp_header(data: bytes) -> ImageInfo:
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = min(len(data), 8 + riff_size)
    pos = 12
    size: tuple[int, int] | None = None
    exif: bytes | None = None
    while pos + 8 <= end:
        kind = data[pos : pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if body + length > end:
            raise BadImage("truncated WebP chunk")
        if size is None:
            size = _webp_size(kind, data[body : body + min(length, 10)])
        elif kind == b"EXIF" and exif is None:
            exif = data[body : body + length]
        pos = body + length + (length & 1)
    if size is None or not size[0] or not size[1]:
        raise BadImage("WebP has no image chunk")
    return ImageInfo("WEBP", size[0], size[1], 4, exif)


def _webp_size(kind: bytes, head: bytes) -> tuple[int, int]:
    if kind == b"VP8 " and len(head) >= 10 and head[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", head, 6)
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and len(head) >= 5 and head[0] == 0x2F:
        (bits,) = struct.unpack_from("<I", head, 1)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(head) >= 10:
        return (int.from_bytes(head[4:7], "little") + 1, int.from_bytes(head[7:10], "little") + 1)
    raise BadImage("WebP's first chunk is not VP8, VP8L or VP8X")
