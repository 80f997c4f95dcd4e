"""Huge, deterministic video bodies made on the fly, for streaming and Range tests.

A large body of ``size`` bytes for a ``seed`` is one fixed pattern repeated: a 24-byte MP4
``ftyp`` box (so it sniffs as a video) followed by SHAKE-256 noise derived from the seed. The
pattern is a little longer than a chunk and not a power of two long, so a slice taken at the
wrong offset never matches by accident. Nothing but the pattern (about 2 MiB) is ever held:
:func:`large_body_chunks` slices it, and a test computes the expected bytes or digest with the
same functions the simulator serves from.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

#: Bytes per chunk served (and per slice yielded by :func:`large_body_chunks`).
CHUNK_SIZE = 1 << 20
_FTYP = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
_PERIOD = CHUNK_SIZE + 4099


@functools.lru_cache(maxsize=8)
def _pattern(seed: int) -> bytes:
    """One period of the body for ``seed``, plus a chunk of wrap-around so slices never split."""
    noise = hashlib.shake_256(f"sora-simulator/large/{seed}".encode()).digest(_PERIOD - len(_FTYP))
    period = _FTYP + noise
    return period + period[:CHUNK_SIZE]


def large_body_chunks(
    size: int, seed: int = 0, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of the ``size``-byte large body for ``seed``.

    ``end`` is exclusive, as in a slice (``None`` means ``size``), and is clipped to ``size``.
    Chunks are at most :data:`CHUNK_SIZE` bytes; joining them gives
    ``body[start:end]`` for the body the simulator serves for ``add_large_video(size, seed=seed)``.
    """
    if size < 0 or start < 0:
        raise ValueError("size and start must not be negative")
    stop = size if end is None else min(end, size)
    pattern = _pattern(seed)
    position = start
    while position < stop:
        count = min(CHUNK_SIZE, stop - position)
        offset = position % _PERIOD
        yield pattern[offset : offset + count]
        position += count


def large_body_sha256(size: int, seed: int = 0) -> str:
    """Return the hex SHA-256 of the whole ``size``-byte large body for ``seed``."""
    digest = hashlib.sha256()
    for chunk in large_body_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()
