"""The archive's contract: finished videos' bytes, kept after the upstream's copy is gone.

Keys are ``/``-separated relative names (``videos/video_abc/thumbnail``). A write becomes
visible only once complete; until then, and after any failure, :meth:`Archive.stat` answers as
if it never started. Two implementations pass one test suite (``tests/test_archive.py``):
:class:`~sora_proxy.archive.local.LocalArchive` (a folder) and
:class:`~sora_proxy.archive.s3.S3Archive` (an S3-compatible bucket).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

#: Read size for archived bodies: large enough that a 1 GiB video is ~1k writes.
CHUNK_SIZE = 1024 * 1024
#: The type of an object whose writer did not say.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: In a key's last segment, names the archive keeps for its own files beside the object.
PARTIAL_MARK = ".partial-"
META_SUFFIX = ".meta.json"

_SEGMENT = re.compile(r"[^\x00-\x1f\x7f/\\]+")


@dataclass(frozen=True)
class ArchivedObject:
    """One complete object in the archive.

    :param key: its key.
    :param size: its length in bytes.
    :param etag: the hex SHA-256 of its bytes, computed while they were written.
    :param content_type: the type its writer gave.
    :param stored_at: seconds since the epoch when it became visible.
    """

    key: str
    size: int
    etag: str
    content_type: str
    stored_at: float


class ArchiveError(Exception):
    """The archive could not store or read something now.

    ``str(error)`` names the key or operation and the cause's kind; it never carries
    credentials, signed URLs or endpoint keys, so it is fit for a log line.
    """


class _Entry(NamedTuple):
    """A complete object as a sweep sees it."""

    key: str
    size: int
    stored_at: float


class Archive(ABC):
    """Where finished videos' bytes are kept. Every method raises :class:`ArchiveError` when
    the backend fails, and :class:`ValueError` for a malformed key (see :func:`check_key`)."""

    @abstractmethod
    def put(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> ArchivedObject:
        """Store the bytes of ``chunks`` under ``key`` atomically and describe what was stored.

        The object becomes visible only once complete. An exception from ``chunks`` (re-raised
        unchanged) or from the backend (as :class:`ArchiveError`) leaves nothing new at
        ``key``: an older complete object there stays. The body is never held whole in memory.
        """

    @abstractmethod
    def stat(self, key: str) -> ArchivedObject | None:
        """The complete object at ``key``, or ``None``."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``start`` to ``end`` (inclusive; ``None``: to the end) of ``key``.

        A generator: nothing is opened until the first chunk is asked for, and closing it
        releases the file or HTTP body at once.
        """

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (``"videos/video_abc/"``: all
        its variants), with any of the archive's own files beside them; how many objects."""

    @abstractmethod
    def local_path(self, key: str) -> Path | None:
        """The complete file holding ``key`` when the archive is a local folder, else ``None``."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`ArchiveError` unless the archive can be written and read now."""

    @abstractmethod
    def describe(self) -> str:
        """Where the archive is, for a log line (``local folder /x``); never credentials."""

    def sweep(
        self,
        *,
        now: float,
        retention: float | None,
        max_bytes: int | None,
        partial_age: float = 3600.0,
    ) -> list[str]:
        """Apply retention and the size cap; the keys deleted, oldest first.

        Objects stored more than ``retention`` seconds before ``now`` go first, then the oldest
        (by ``stored_at``) until the total is at most ``max_bytes``. Leftovers of writes that
        died (partial files, abandoned uploads) older than ``partial_age`` go too; they are
        not keys and are not listed.
        """
        kept = sorted(self._scan(now - partial_age), key=lambda entry: (entry.stored_at, entry.key))
        doomed: list[_Entry] = []
        if retention is not None:
            doomed = [entry for entry in kept if now - entry.stored_at > retention]
            kept = kept[len(doomed) :]
        if max_bytes is not None:
            total = sum(entry.size for entry in kept)
            while kept and total > max_bytes:
                total -= kept[0].size
                doomed.append(kept.pop(0))
        keys = [entry.key for entry in doomed]
        if keys:
            self._remove(keys)
        return keys

    @abstractmethod
    def _scan(self, partial_cutoff: float) -> list[_Entry]:
        """Every complete object; deletes leftovers of dead writes older than the cutoff."""

    @abstractmethod
    def _remove(self, keys: list[str]) -> None:
        """Delete these complete objects and their own files."""


def check_key(key: str) -> list[str]:
    """The segments of ``key``; :class:`ValueError` unless it is a relative ``/``-separated
    name whose segments are non-empty, not ``.`` or ``..``, free of control characters and
    backslashes, and do not use the names the archive keeps for its own files."""
    segments = key.split("/")
    if not key or len(key) > 900 or not all(_valid_segment(part) for part in segments):
        raise ValueError(f"not an archive key: {key!r}")
    return segments


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a key, or a key followed by ``/``; else :class:`ValueError`."""
    check_key(prefix.removesuffix("/"))
    return prefix


def is_partial(name: str) -> bool:
    """True for the name of a write still under way, or of one that died."""
    return PARTIAL_MARK in name


def _valid_segment(segment: str) -> bool:
    return (
        _SEGMENT.fullmatch(segment) is not None
        and segment not in {".", ".."}
        and not is_partial(segment)
        and not segment.endswith(META_SUFFIX)
    )


def is_key(key: str) -> bool:
    """Whether ``key`` passes :func:`check_key`."""
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def check_span(start: int, end: int | None) -> None:
    """:class:`ValueError` unless ``start``..``end`` (inclusive) is a possible byte span."""
    if start < 0 or (end is not None and end < start - 1):
        raise ValueError(f"not a byte span: {start}-{end}")
