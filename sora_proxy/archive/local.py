"""The archive as a local folder: one file per key, its metadata in a JSON sidecar beside it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..offload import cpu_bound
from .base import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    META_SUFFIX,
    PARTIAL_MARK,
    Archive,
    ArchivedObject,
    ArchiveError,
    _Entry,
    check_key,
    check_prefix,
    check_span,
    is_key,
    is_partial,
)


class LocalArchive(Archive):
    """Keys are files under ``root`` (``videos/video_abc/video``), each with a sidecar
    ``<file>.meta.json`` holding its type, SHA-256, size and ``stored_at``.

    A write goes to ``<file>.partial-<random>`` in the same folder, hashed as it is written,
    then flushed and fsynced; the sidecar is written next (temporary file, then
    ``os.replace``), then the data file is renamed into place and the folder fsynced. A process
    killed at any point therefore leaves at most a ``.partial-`` file (swept later), never a
    partial file under the key's name.

    The sidecar also records the size and mtime of the file it describes. Killed between its
    two renames, a write leaves the new sidecar beside the older file; :meth:`stat` notices the
    mismatch (or a missing sidecar) and rehashes the file once, rewriting the sidecar, so an
    ETag never describes other bytes. Folders emptied by deletion are removed.

    :param root: the folder; created on the first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def put(self, key: str, chunks: Iterable[bytes], *, content_type: str) -> ArchivedObject:
        """See :meth:`Archive.put`."""
        final = self._path(key)
        temp = final.with_name(f"{final.name}{PARTIAL_MARK}{secrets.token_hex(8)}")
        hasher = hashlib.sha256()
        try:
            with _failing(key, "create"):
                final.parent.mkdir(parents=True, exist_ok=True)
                out = open(temp, "xb")
            with out:
                for chunk in chunks:
                    hasher.update(chunk)
                    with _failing(key, "write"):
                        out.write(chunk)
                with _failing(key, "write"):
                    out.flush()
                    # Writing a whole video's dirty pages out can take seconds: off gevent's loop.
                    cpu_bound(os.fsync, out.fileno())
                    written = os.fstat(out.fileno())
            stored = ArchivedObject(
                key, written.st_size, hasher.hexdigest(), content_type, time.time()
            )
            with _failing(key, "store"):
                _write_meta(final, stored, written)
                os.replace(temp, final)
        except BaseException:
            with suppress(OSError):
                temp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return stored

    def stat(self, key: str) -> ArchivedObject | None:
        """See :meth:`Archive.stat`."""
        path = self._path(key)
        try:
            status = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise ArchiveError(
                f"could not stat {key} in the local archive: {error.strerror}"
            ) from error
        if not stat.S_ISREG(status.st_mode):
            return None
        meta = _read_meta(path)
        if meta is not None and _describes(meta, status):
            return ArchivedObject(
                key, status.st_size, meta["etag"], meta["content_type"], meta["stored_at"]
            )
        content_type = (meta or {}).get("content_type") or DEFAULT_CONTENT_TYPE
        return self._reindex(key, path, content_type)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """See :meth:`Archive.read`."""
        check_span(start, end)
        return self._chunks(key, self._path(key), start, end)

    def delete_prefix(self, prefix: str) -> int:
        """See :meth:`Archive.delete_prefix`."""
        folder, _, _ = check_prefix(prefix).rpartition("/")
        count = 0
        for path in list(self._files(self.root / folder)):
            if path.relative_to(self.root).as_posix().startswith(prefix):
                count += not (is_partial(path.name) or path.name.endswith(META_SUFFIX))
                self._unlink(path)
        return count

    def local_path(self, key: str) -> Path | None:
        """See :meth:`Archive.local_path`."""
        path = self._path(key)
        return path if path.is_file() else None

    def ping(self) -> None:
        """See :meth:`Archive.ping`."""
        with _failing("the archive folder", "create"):
            self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ArchiveError("the archive folder is not writable")

    def describe(self) -> str:
        """See :meth:`Archive.describe`."""
        return f"local folder {self.root}"

    def _scan(self, partial_cutoff: float) -> list[_Entry]:
        entries = []
        for path in list(self._files(self.root)):
            try:
                status = path.stat()
            except OSError:
                continue  # deleted meanwhile
            if is_partial(path.name) or path.name.endswith(META_SUFFIX):
                data = path.with_name(path.name.removesuffix(META_SUFFIX))
                orphan = is_partial(path.name) or not data.exists()
                if orphan and status.st_mtime < partial_cutoff:
                    self._unlink(path)
                continue
            key = path.relative_to(self.root).as_posix()
            if not is_key(key):
                continue  # not ours: never deleted by a sweep
            meta = _read_meta(path)
            stored_at = meta["stored_at"] if meta and _describes(meta, status) else status.st_mtime
            entries.append(_Entry(key, status.st_size, stored_at))
        return entries

    def _remove(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            self._unlink(path)
            self._unlink(path.with_name(path.name + META_SUFFIX))

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def _files(self, folder: Path) -> Iterator[Path]:
        for parent, _, names in os.walk(folder):
            for name in names:
                yield Path(parent, name)

    def _unlink(self, path: Path) -> None:
        """Delete ``path``, then the folders it leaves empty up to the root."""
        with _failing(path.name, "delete"):
            path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or a write is filling it again)
            folder = folder.parent

    def _chunks(self, key: str, path: Path, start: int, end: int | None) -> Iterator[bytes]:
        remaining = math.inf if end is None else end - start + 1
        with _failing(key, "read"), open(path, "rb") as source:
            source.seek(start)
            while remaining > 0:
                chunk = source.read(int(min(CHUNK_SIZE, remaining)))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def _reindex(self, key: str, path: Path, content_type: str) -> ArchivedObject | None:
        """Describe ``path`` from its bytes and rewrite its sidecar (see the class docstring)."""
        try:
            # A whole video read and hashed: seconds for a large one, off gevent's loop.
            digest, status = cpu_bound(_hash_file, path)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ArchiveError(
                f"could not read {key} in the local archive: {error.strerror}"
            ) from error
        stored = ArchivedObject(key, status.st_size, digest, content_type, status.st_mtime)
        with suppress(OSError):  # a read-only archive still answers; it rehashes next time
            _write_meta(path, stored, status)
        return stored


def _hash_file(path: Path) -> tuple[str, os.stat_result]:
    """The SHA-256 of the file at ``path`` and its status as read."""
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            hasher.update(chunk)
        return hasher.hexdigest(), os.fstat(source.fileno())


@contextmanager
def _failing(key: str, doing: str) -> Iterator[None]:
    """Turn an ``OSError`` of the archive's own files into :class:`ArchiveError`."""
    try:
        yield
    except OSError as error:
        raise ArchiveError(
            f"could not {doing} {key} in the local archive: {error.strerror or error}"
        ) from error


def _write_meta(final: Path, stored: ArchivedObject, written: os.stat_result) -> None:
    meta = {
        "content_type": stored.content_type,
        "etag": stored.etag,
        "size": stored.size,
        "stored_at": stored.stored_at,
        "mtime_ns": written.st_mtime_ns,
    }
    target = final.with_name(final.name + META_SUFFIX)
    temp = target.with_name(f"{target.name}{PARTIAL_MARK}{secrets.token_hex(8)}")
    try:
        with open(temp, "x", encoding="utf-8") as out:
            json.dump(meta, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _read_meta(final: Path) -> dict[str, Any] | None:
    """The sidecar of ``final`` if it is readable and whole, else ``None``."""
    try:
        with open(final.with_name(final.name + META_SUFFIX), encoding="utf-8") as source:
            meta = json.load(source)
    except (OSError, ValueError):
        return None
    fields = {"content_type": str, "etag": str, "size": int, "stored_at": float, "mtime_ns": int}
    whole = isinstance(meta, dict) and all(isinstance(meta.get(k), t) for k, t in fields.items())
    return meta if whole else None


def _describes(meta: dict[str, Any], status: os.stat_result) -> bool:
    """Whether the sidecar was written for this very file (not an older one at its name)."""
    return bool(meta["size"] == status.st_size and meta["mtime_ns"] == status.st_mtime_ns)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable: a crash after ``put`` returned must not undo it."""
    with suppress(OSError):  # some filesystems refuse it; the rename is atomic all the same
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
