"""The reference image of a create: an ``input_reference`` upload or an ``image_reference``.

vLLM-Omni decodes it before queueing the job; what does not decode is a 400 "Invalid input
reference.". The simulator never fetches an ``http(s)`` ``image_url``: it takes it as given.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from PIL import Image
from werkzeug.datastructures import FileStorage

from .errors import VllmError


def check_upload(upload: FileStorage) -> None:
    """An uploaded ``input_reference`` must be a video (v2v) or an image that decodes."""
    if (upload.mimetype or "").startswith("video/"):
        return
    _check_image(upload.read())


def check_image_reference(reference: dict[str, Any]) -> None:
    """``{"image_url": ...}`` only; a ``data:`` URL must hold an image (URLs are not fetched)."""
    url = reference.get("image_url")
    if set(reference) != {"image_url"} or not isinstance(url, str):
        raise VllmError(400, "Invalid input reference.")
    if url.startswith("data:"):
        _, _, payload = url.partition(",")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise VllmError(400, "Invalid input reference.") from None
        _check_image(data)


def _check_image(data: bytes) -> None:
    """Raise the 400 unless ``data`` is an image Pillow can open."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception:
        raise VllmError(400, "Invalid input reference.") from None
