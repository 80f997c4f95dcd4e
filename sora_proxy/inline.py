"""Image bytes sent inline as text: base64 (standard or URL-safe) and ``data:`` URIs.

A reference may be 20 MiB of image, so 27 MB of base64: it is decoded without copying the
text where possible (canonical base64 in one pass), and its size is checked before decoding.
It is decoded a piece at a time: ``binascii`` holds the GIL for a whole call (about 70 ms for
27 MB), and between pieces the interpreter may hand it over, so under gevent workers, where
:func:`~sora_proxy.offload.cpu_bound` decodes in a native thread, the event loop keeps
running.
"""

from __future__ import annotations

import binascii
import io

from .errors import InvalidRequest, PayloadTooLarge

#: Characters of base64 decoded per ``binascii`` call (a multiple of 4: whole quanta).
PIECE_CHARS = 1024 * 1024


def decode_base64(text: str, *, max_bytes: int, param: str) -> bytes:
    """Decode standard or URL-safe base64, tolerating whitespace and missing padding.

    Canonical base64 (what every client sends) is decoded in one pass with no copy of the
    text; anything else falls back to a lenient, slower path.
    """
    data: bytes | None = None
    if len(text) * 3 // 4 <= max_bytes + 3:
        try:
            data = _a2b_strict(text)
        except (binascii.Error, ValueError):
            data = None
    if data is None:
        compact = "".join(text.split())
        if len(compact) * 3 // 4 > max_bytes + 3:
            raise too_large(param, max_bytes)
        compact = compact.replace("-", "+").replace("_", "/")
        compact += "=" * (-len(compact) % 4)
        try:
            data = _a2b_strict(compact)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                f"{param} is not an http(s) URL, a data URI or valid base64.",
                param=param,
                code="invalid_reference",
            ) from None
    if len(data) > max_bytes:
        raise too_large(param, max_bytes)
    return data


def _a2b_strict(text: str) -> bytes:
    """``binascii.a2b_base64(text, strict_mode=True)``, a piece at a time, same result.

    Only whole quanta before any ``=`` are decoded as separate pieces: strict mode decodes
    those alone exactly as within the whole. The rest (the last quantum or two, and any
    padding) is decoded in one call that starts with data, as it does in the whole.
    """
    if len(text) <= PIECE_CHARS:
        return binascii.a2b_base64(text, strict_mode=True)
    padding = text.find("=")
    data_end = len(text) if padding < 0 else padding
    head_end = max(data_end - 1, 0) // 4 * 4
    # BytesIO hands its buffer over without a copy: one decoded image in memory, not two.
    out = io.BytesIO()
    for start in range(0, head_end, PIECE_CHARS):
        out.write(
            binascii.a2b_base64(text[start : min(start + PIECE_CHARS, head_end)], strict_mode=True)
        )
    out.write(binascii.a2b_base64(text[head_end:], strict_mode=True))
    return out.getvalue()


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
