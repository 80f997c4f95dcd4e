"""``input_reference`` in whatever form a client sent it, turned into one checked image.

Accepted forms: an http(s) URL, raw base64, a ``data:`` URI, an object ``{"image_url": ...}``
(whose value may itself be any of the string forms, or ``{"url": ...}``), an object
``{"file_id": ...}``, and a multipart file part. Whatever the form, the image is identified by
its bytes (PNG, JPEG or WebP), never by a declared type or filename, and checked whole so that
a truncated or disguised file is refused before any upstream spend.

Only as much work is done as the upstream needs: the header gives the size and what decoding
would cost (an image over :data:`MAX_PIXELS` or :data:`~.imagework.MAX_DECODE_BYTES` is
refused before any decoding); an upright image of the right size is checked without keeping
its pixels (PNG: every chunk's CRC; JPEG: decoded at 1/8 scale; WebP: decoded) and sent byte
for byte; only an image that must be fitted is decoded (see :mod:`.imagework`) and re-encoded.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

from PIL import Image, UnidentifiedImageError

from . import imagework
from .errors import InvalidRequest
from .fetch import FetchPolicy, fetch_bytes
from .imageinfo import (
    SWAPPING_ORIENTATIONS,
    BadImage,
    ImageInfo,
    check_png_chunks,
    orientation,
    read_info,
)
from .inline import decode_base64, decode_data_uri, too_large
from .offload import cpu_bound
from .sizing import VideoSize

T = TypeVar("T")

PARAM = "input_reference"
#: Largest frame accepted, in pixels, whatever its cost to decode; guards Pillow against
#: decompression bombs without touching its process-wide ``MAX_IMAGE_PIXELS`` (the host app
#: owns that).
MAX_PIXELS = 40_000_000
_MIB = 1024 * 1024
_MIME_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: A host (name or IPv4) and maybe a port, then a path or nothing: a URL without its scheme.
_HOST_FIRST = re.compile(r"^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)(?::\d+)?(?:[/?#]|$)")
_DECODE_ERRORS = (BadImage, UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image as it will be sent upstream: bytes, their true type and pixel size.

    :param size: the pixel size as displayed (after the EXIF orientation).
    :param orientation: the EXIF orientation, 1 (upright as stored) to 8.
    :param info: the header, for images not yet decoded.
    :param verified: the whole file has been checked (decoded, or every PNG chunk's CRC).
    :param param: the request field it came from, named in errors found later.
    """

    data: bytes
    mime_type: str
    size: VideoSize
    orientation: int = 1
    info: ImageInfo | None = field(default=None, compare=False, repr=False)
    verified: bool = False
    param: str = field(default=PARAM, compare=False, repr=False)

    @property
    def filename(self) -> str:
        """``reference.png|jpg|webp``: the part name the upstream is sent."""
        return f"reference.{_MIME_EXTENSIONS[self.mime_type]}"

    @property
    def needs_transpose(self) -> bool:
        """True when the pixels are stored rotated or mirrored and must be re-encoded."""
        return self.orientation != 1


@dataclass(frozen=True)
class FileIdReference:
    """A reference to a file already uploaded to the upstream; sent as-is in the JSON form."""

    file_id: str


Reference = ReferenceImage | FileIdReference


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of ``data`` by its magic bytes: PNG, JPEG or WebP, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def load_image(data: bytes, *, param: str = PARAM) -> ReferenceImage:
    """Read the header of a PNG, JPEG or WebP image: its type, pixel size and orientation.

    No pixel is decoded here; a PNG's chunks are checked through IEND (off gevent's event
    loop under gevent workers: a 20 MiB PNG's CRCs take milliseconds). :func:`fit_image`
    checks (or decodes) the rest.

    :raises InvalidRequest: not one of the three types (``invalid_image``), a malformed
        header, or more than :data:`MAX_PIXELS` (``image_too_large``).
    """
    return cpu_bound(_load_image, data, param)


def _load_image(data: bytes, param: str) -> ReferenceImage:
    mime_type = sniff_image_type(data)
    if mime_type is None:
        raise InvalidRequest(
            f"{param} is not a PNG, JPEG or WebP image.", param=param, code="invalid_image"
        )
    try:
        info = read_info(data, _PIL_FORMATS[mime_type])
        if info.pixels > MAX_PIXELS:
            raise InvalidRequest(
                f"{param} is {info.width}x{info.height} pixels ({info.pixels / 1e6:,.0f} "
                f"megapixels), more than the {MAX_PIXELS / 1e6:.0f}-megapixel limit for a "
                "reference image.",
                param=param,
                code="image_too_large",
            )
        exif = check_png_chunks(data) if info.format == "PNG" else info.exif
    except BadImage:
        raise _undecodable(param) from None
    turn = orientation(exif)
    rotated = turn in SWAPPING_ORIENTATIONS
    size = VideoSize(info.height, info.width) if rotated else VideoSize(info.width, info.height)
    return ReferenceImage(
        data, mime_type, size, turn, info, verified=info.format == "PNG", param=param
    )


def read_upload(stream: IO[bytes], *, max_bytes: int, param: str = PARAM) -> bytes:
    """Read an uploaded file part, refusing it once it passes ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(param, max_bytes)
    return data


def resolve_reference(value: Any, policy: FetchPolicy, *, param: str = PARAM) -> Reference:
    """Turn a JSON or text ``input_reference`` value into a :data:`Reference`.

    :param value: a string (URL, data URI, raw base64) or an object with ``image_url`` or
        ``file_id``.
    :param policy: how URLs may be fetched; its ``max_bytes`` caps every form.
    """
    if isinstance(value, dict):
        return _resolve_object(value, policy, param)
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(
            f"{param} must be a URL, a data URI, base64 image data, or an object with "
            "'image_url' or 'file_id'.",
            param=param,
            code="invalid_reference",
        )
    text = value.strip()
    if text[:5].lower() == "data:":
        data = cpu_bound(decode_data_uri, text, max_bytes=policy.max_bytes, param=param)
    elif ":" in text:
        # Base64 has no colon, so anything with one is a URL of some scheme: fetch.py
        # accepts http(s) and refuses the rest with a clear reason.
        data = fetch_bytes(text, policy, param=param)
    elif _looks_like_url(text):
        raise InvalidRequest(
            f"{param} looks like a URL without a scheme; give an http(s) URL such as "
            "'https://example.com/cat.png', or send the image itself (base64, a data URI or "
            "a file part).",
            param=param,
            code="invalid_reference_url",
        )
    else:
        data = cpu_bound(decode_base64, text, max_bytes=policy.max_bytes, param=param)
    return load_image(data, param=param)


def _looks_like_url(text: str) -> bool:
    """``//host/path`` or ``host.name/path``, unless it is base64 of an image (which may start
    with ``//`` but never holds a dot)."""
    if not (text.startswith("//") or _HOST_FIRST.match(text)):
        return False
    try:
        head = binascii.a2b_base64(text[:24])
    except binascii.Error:
        return True
    return sniff_image_type(head) is None


def _resolve_object(value: dict[str, Any], policy: FetchPolicy, param: str) -> Reference:
    keys = {key for key, item in value.items() if item not in (None, "")}
    if keys == {"file_id"}:
        file_id = value["file_id"]
        if not isinstance(file_id, str) or not _FILE_ID.match(file_id):
            raise InvalidRequest(
                f"{param}.file_id must be a file id such as 'file-abc123'.",
                param=f"{param}.file_id",
                code="invalid_reference",
            )
        return FileIdReference(file_id)
    if keys == {"image_url"}:
        image_url = value["image_url"]
        if isinstance(image_url, dict) and isinstance(image_url.get("url"), str):
            image_url = image_url["url"]
        return resolve_reference(image_url, policy, param=f"{param}.image_url")
    raise InvalidRequest(
        f"{param} object must have exactly one of 'image_url' or 'file_id'.",
        param=param,
        code="invalid_reference",
    )


def fit_image(image: ReferenceImage, size: VideoSize | None, mode: str) -> ReferenceImage:
    """Check ``image`` whole and make it exactly ``size`` per ``SORA_PROXY_REFERENCE_FIT``.

    ``cover`` scales and centre-crops, ``contain`` scales and letterboxes in black, ``reject``
    refuses a mismatch, ``pass`` sends the image as it is. An image already of the right size
    and upright (or any image, with ``pass`` or no ``size``) is sent byte for byte.

    :raises InvalidRequest: a mismatch under ``reject``, an image that would take more than
        :data:`~.imagework.MAX_DECODE_BYTES` to decode (``image_too_large``), or one that does
        not decode (``invalid_image``).
    """
    if size is None or mode == "pass" or (image.size == size and not image.needs_transpose):
        return _checked(image)
    if mode == "reject" and image.size != size:
        raise InvalidRequest(
            f"{PARAM} is {image.size} but the video size is {size}; the upstream needs a "
            "reference of exactly the video's size.",
            param=PARAM,
            code="reference_size_mismatch",
        )
    info = _info(image)
    how: imagework.Fit = "contain" if mode == "contain" else "cover"
    target = (size.width, size.height)
    stored = imagework.stored_target(target, image.orientation)
    _within_budget(
        image, imagework.plan_decode(info, imagework.least_decoded_size(info, stored, how))
    )
    image_format = info.format
    data = _decoding(
        image,
        lambda: imagework.fit_and_encode(
            image.data, info, target, how, image.orientation, image_format
        ),
    )
    return ReferenceImage(data, image.mime_type, size, verified=True, param=image.param)


def _checked(image: ReferenceImage) -> ReferenceImage:
    if image.verified:
        return image
    info = _info(image)
    _within_budget(image, imagework.plan_decode(info, (1, 1)))
    _decoding(image, lambda: imagework.check_pixels(image.data, info))
    return ReferenceImage(
        image.data,
        image.mime_type,
        image.size,
        image.orientation,
        info,
        verified=True,
        param=image.param,
    )


def _info(image: ReferenceImage) -> ImageInfo:
    if image.info is not None:
        return image.info
    try:
        return read_info(image.data, _PIL_FORMATS[image.mime_type])
    except BadImage:
        raise _undecodable(image.param) from None


def _within_budget(image: ReferenceImage, plan: imagework.DecodePlan) -> None:
    if plan.cost <= imagework.MAX_DECODE_BYTES:
        return
    info = _info(image)
    raise InvalidRequest(
        f"{image.param} is a {info.width}x{info.height} {info.format} image that would take "
        f"{plan.cost / _MIB:,.0f} MiB of memory to decode, more than the "
        f"{imagework.MAX_DECODE_BYTES / _MIB:.0f} MiB limit for a reference image; send a "
        "smaller image (no video is larger than 1792x1024).",
        param=image.param,
        code="image_too_large",
    )


def _decoding(image: ReferenceImage, job: Callable[[], T]) -> T:
    """Run ``job`` in the process's image gate, turning decoding failures into 400s."""
    try:
        return imagework.GATE.run(job)
    except Image.DecompressionBombError:
        # Only when the host app set Pillow's own limit below ours.
        info = _info(image)
        raise InvalidRequest(
            f"{image.param} is {info.width}x{info.height} pixels, more than this server decodes.",
            param=image.param,
            code="image_too_large",
        ) from None
    except _DECODE_ERRORS:
        raise _undecodable(image.param) from None


def _undecodable(param: str) -> InvalidRequest:
    return InvalidRequest(
        f"{param} could not be decoded as an image; it may be truncated or corrupt.",
        param=param,
        code="invalid_image",
    )
