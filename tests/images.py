"""Test images made with Pillow, and a multipart parser independent of werkzeug."""

from __future__ import annotations

import base64
import io
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
