"""Image bytes sent inline as text: base64 (standard or URL-safe) and ``data:`` URIs.

A reference may be 20 MiB of image, so 27 MB of base64: it is decoded without copying the
text where possible (canonical base64 in one pass), and its size is checked before decoding.
"""

from __future__ import annotations

import binascii

from .errors import InvalidRequest, PayloadTooLarge


def decode_base64(text: str, *, max_bytes: int, param: str) -> bytes:
    """Decode standard or URL-safe base64, tolerating whitespace and missing padding.

    Canonical base64 (what every client sends) is decoded in one pass with no copy of the
    text; anything else falls back to a lenient, slower path.
    """
    data: bytes | None = None
    if len(text) * 3 // 4 <= max_bytes + 3:
        try:
            data = binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError):
            data = None
    if data is None:
        compact = "".join(text.split())
        if len(compact) * 3 // 4 > max_bytes + 3:
            raise too_large(param, max_bytes)
        compact = compact.replace("-", "+").replace("_", "/")
        compact += "=" * (-len(compact) % 4)
        try:
            data = binascii.a2b_base64(compact, strict_mode=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                f"{param} is not an http(s) URL, a data URI or valid base64.",
                param=param,
                code="invalid_reference",
            ) from None
    if len(data) > max_bytes:
        raise too_large(param, max_bytes)
    return data


def decode_data_uri(uri: str, *, max_bytes: int, param: str) -> bytes:
    """The bytes of a ``data:`` URI; the declared type is ignored (the bytes are sniffed)."""
    # The header is short: look for its end only near the start, never through the payload.
    comma = uri.find(",", 0, 1024)
    params = [item.strip().lower() for item in uri[5 : max(comma, 5)].split(";")[1:]]
    if comma < 0 or "base64" not in params:
        raise InvalidRequest(
            f"{param} data URI must be base64-encoded (data:image/png;base64,...).",
            param=param,
            code="invalid_reference",
        )
    return decode_base64(uri[comma + 1 :], max_bytes=max_bytes, param=param)


def too_large(param: str, max_bytes: int) -> PayloadTooLarge:
    """The 413 for a reference over ``max_bytes``, in any form."""
    return PayloadTooLarge(f"{param} is larger than the {max_bytes}-byte limit.", param=param)
