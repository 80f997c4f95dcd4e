"""``input_reference`` in whatever form a client sent it, turned into one checked image.

Accepted forms: an http(s) URL, raw base64, a ``data:`` URI, an object ``{"image_url": ...}``
(whose value may itself be any of the string forms, or ``{"url": ...}``), an object
``{"file_id": ...}``, and a multipart file part. Whatever the form, the image is identified by
its bytes (PNG, JPEG or WebP), never by a declared type or filename, and decoded with Pillow
so that a truncated or disguised file is refused before any upstream spend.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidRequest, PayloadTooLarge
from .fetch import FetchPolicy, fetch_bytes
from .sizing import VideoSize

PARAM = "input_reference"
#: Largest decoded frame accepted; guards Pillow against decompression bombs without
#: touching its process-wide ``MAX_IMAGE_PIXELS`` (the host app owns that).
MAX_PIXELS = 40_000_000
_MIME_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
_FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DATA_URI = re.compile(r"^data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)


@dataclass(frozen=True)
class ReferenceImage:
    """A reference image as it will be sent upstream: bytes, their true type and pixel size."""

    data: bytes
    mime_type: str
    size: VideoSize
    #: True when the pixels are stored rotated (EXIF orientation) and must be re-encoded.
    needs_transpose: bool = False
    #: The decoded image, kept so fitting does not decode it a second time.
    pixels: Image.Image | None = field(default=None, compare=False, repr=False)

    @property
    def filename(self) -> str:
        """``reference.png|jpg|webp``: the part name the upstream is sent."""
        return f"reference.{_MIME_EXTENSIONS[self.mime_type]}"


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
    """Check that ``data`` is a whole PNG, JPEG or WebP image and read its pixel size."""
    mime_type = sniff_image_type(data)
    if mime_type is None:
        raise InvalidRequest(
            f"{param} is not a PNG, JPEG or WebP image.", param=param, code="invalid_image"
        )
    try:
        # Opening reads only the header, so the pixel cap is checked before any decoding.
        # (Pillow's own bomb check raises past twice its process-wide limit; warnings.filter
        # is not used to tighten it: that is global state, shared by every request thread.)
        image = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[mime_type]])
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InvalidRequest(
                f"{param} is {width}x{height}, more than {MAX_PIXELS} pixels.",
                param=param,
                code="invalid_image",
            )
        orientation = image.getexif().get(0x0112, 1)
        image.load()
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidRequest(
            f"{param} could not be decoded as an image; it may be truncated or corrupt.",
            param=param,
            code="invalid_image",
        ) from None
    rotated = orientation in (5, 6, 7, 8)
    size = VideoSize(height, width) if rotated else VideoSize(width, height)
    return ReferenceImage(
        data, mime_type, size, needs_transpose=orientation not in (None, 1), pixels=image
    )


def decode_base64(text: str, *, max_bytes: int, param: str = PARAM) -> bytes:
    """Decode standard or URL-safe base64, tolerating whitespace and missing padding."""
    compact = "".join(text.split())
    if len(compact) * 3 // 4 > max_bytes + 3:
        raise _too_large(param, max_bytes)
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"{param} is not a URL, a data URI or valid base64.", param=param
        ) from None
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
    return data


def decode_data_uri(uri: str, *, max_bytes: int, param: str = PARAM) -> bytes:
    """The bytes of a ``data:`` URI; the declared type is ignored (the bytes are sniffed)."""
    match = _DATA_URI.match(uri.strip())
    if not match or ";base64" not in match.group("params").lower():
        raise InvalidRequest(
            f"{param} data URI must be base64-encoded (data:image/png;base64,...).", param=param
        )
    return decode_base64(match.group("data"), max_bytes=max_bytes, param=param)


def read_upload(stream: IO[bytes], *, max_bytes: int, param: str = PARAM) -> bytes:
    """Read an uploaded file part, refusing it once it passes ``max_bytes``."""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(param, max_bytes)
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
        )
    text = value.strip()
    if text[:5].lower() == "data:":
        data = decode_data_uri(text, max_bytes=policy.max_bytes, param=param)
    elif ":" in text:
        # Base64 has no colon, so anything with one is a URL of some scheme: fetch.py
        # accepts http(s) and refuses the rest with a clear reason.
        data = fetch_bytes(text, policy, param=param)
    else:
        data = decode_base64(text, max_bytes=policy.max_bytes, param=param)
    return load_image(data, param=param)


def _resolve_object(value: dict[str, Any], policy: FetchPolicy, param: str) -> Reference:
    keys = {key for key, item in value.items() if item not in (None, "")}
    if keys == {"file_id"}:
        file_id = value["file_id"]
        if not isinstance(file_id, str) or not _FILE_ID.match(file_id):
            raise InvalidRequest(
                f"{param}.file_id must be a file id such as 'file-abc123'.",
                param=f"{param}.file_id",
            )
        return FileIdReference(file_id)
    if keys == {"image_url"}:
        image_url = value["image_url"]
        if isinstance(image_url, dict) and isinstance(image_url.get("url"), str):
            image_url = image_url["url"]
        return resolve_reference(image_url, policy, param=f"{param}.image_url")
    raise InvalidRequest(
        f"{param} object must have exactly one of 'image_url' or 'file_id'.", param=param
    )


def fit_image(image: ReferenceImage, size: VideoSize, mode: str) -> ReferenceImage:
    """Make ``image`` exactly ``size`` per ``SORA_PROXY_REFERENCE_FIT``.

    ``cover`` scales and centre-crops, ``contain`` scales and letterboxes in black, ``reject``
    refuses a mismatch, ``pass`` sends the image as it is. An image already of the right size
    (and upright) is sent byte for byte.
    """
    if image.size == size and not image.needs_transpose:
        return image
    if mode == "pass":
        return image
    if mode == "reject" and image.size != size:
        raise InvalidRequest(
            f"{PARAM} is {image.size} but the video size is {size}; the upstream needs a "
            "reference of exactly the video's size.",
            param=PARAM,
            code="reference_size_mismatch",
        )
    with image.pixels or Image.open(io.BytesIO(image.data)) as source:
        upright = ImageOps.exif_transpose(source)
        target = (size.width, size.height)
        if upright.size == target:
            fitted = upright
        elif mode == "contain":
            fitted = ImageOps.pad(_opaque_safe(upright), target, Image.Resampling.LANCZOS,
                                  color=(0, 0, 0))
        else:
            fitted = ImageOps.fit(_opaque_safe(upright), target, Image.Resampling.LANCZOS)
        return ReferenceImage(_encode(fitted, image.mime_type), image.mime_type, size)


def _opaque_safe(image: Image.Image) -> Image.Image:
    """Convert palette and exotic modes to RGB(A) so resampling and padding are exact."""
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


def _encode(image: Image.Image, mime_type: str) -> bytes:
    out = io.BytesIO()
    if mime_type == "image/jpeg":
        image.convert("RGB").save(out, "JPEG", quality=95)
    elif mime_type == "image/webp":
        image.save(out, "WEBP", quality=95)
    else:
        # Level 1: a 1280x720 photo encodes in ~30 ms instead of ~90 ms at the default 6, for
        # a file about 1.6x larger; the create latency budget matters more than upload bytes.
        image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _too_large(param: str, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{param} is larger than the {max_bytes}-byte limit.", param=param)
