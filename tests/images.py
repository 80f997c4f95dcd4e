"""Test images made with Pillow, and a multipart parser independent of werkzeug."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP

from PIL import Image


def make_image(width: int, height: int, fmt: str = "PNG", *, split: bool = False) -> bytes:
    """A solid (or left-red / right-blue when ``split``) image in ``fmt``."""
    image = Image.new("RGB", (width, height), (40, 160, 90))
    if split:
        image.paste((255, 0, 0), (0, 0, width // 2, height))
        image.paste((0, 0, 255), (width // 2, 0, width, height))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def make_photo(
    width: int,
    height: int,
    fmt: str = "JPEG",
    *,
    mode: str = "RGB",
    orientation: int | None = None,
    **save: object,
) -> bytes:
    """A left-red / right-blue image with some noise (so it compresses like a photo, not to
    nothing), optionally tagged with an EXIF ``orientation``."""
    image = Image.new("RGB", (width, height), "blue")
    image.paste(Image.new("RGB", (width // 2, height), "red"), (0, 0))
    noise = Image.effect_noise((width, height), 48).convert("RGB")
    image = Image.blend(image, noise, 0.15).convert(mode)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=8)
def zero_png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A whole, valid PNG of black pixels, written by hand so any bit depth and size is
    possible: ``zero_png(6324, 6324, 16, 6)`` is the issue's 311 KB 16-bit RGBA image that
    decodes to 160 MB; ``zero_png(50000, 50000, 1, 0)`` a 2.5-gigapixel bomb."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = bytes(1 + (width * channels * depth + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    palette = png_chunk(b"PLTE", bytes(3)) if colour == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + palette
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def data_uri(data: bytes, declared: str = "image/png") -> str:
    return f"data:{declared};base64,{base64.b64encode(data).decode()}"


def pixel_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def pixel(data: bytes, xy: tuple[int, int]) -> tuple[int, ...]:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB").getpixel(xy)


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into its parts, in order, with their own headers."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart(), content_type
    parts = []
    for item in message.iter_parts():
        disposition = item.get("Content-Disposition")
        assert disposition is not None and disposition.startswith("form-data")
        parts.append(
            Part(
                name=item.get_param("name", header="content-disposition"),
                filename=item.get_param("filename", header="content-disposition"),
                content_type=item.get("Content-Type"),
                data=item.get_payload(decode=True),
            )
        )
    return parts
