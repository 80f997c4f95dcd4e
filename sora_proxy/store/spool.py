"""A local, durable spool of store writes that could not be made when they had to be.

When an upstream has accepted a paid request, its record must survive a store that is briefly
down (Redis restarting, a SQLite disk full or read-only). Such a write is kept here, one small
JSON file per write, written to a temporary name, fsynced and renamed into place, so a crash
leaves either the whole entry or none. Entries are replayed into the store when it answers
again, by any worker process on the host; a replayed write is idempotent, so replaying one
twice (two workers racing) is harmless.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sora_proxy.store")

_SUFFIX = ".json"
_CLAIMED = ".replaying-"


class Spool:
    """A directory of pending writes (``SORA_PROXY_SPOOL_DIR``), on a local disk.

    :param directory: created on first use; it must be on durable local storage, and ideally
        not on the same full disk as a SQLite store.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def keep(self, entry: dict[str, Any]) -> bool:
        """Write ``entry`` durably; ``False`` (and an error line) if even that fails."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex}"
        temporary = self.directory / f".{name}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            data = json.dumps(entry, separators=(",", ":")).encode("utf-8")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(descriptor, data)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.rename(temporary, self.directory / (name + _SUFFIX))
            _fsync_directory(self.directory)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            log.error("spool %s cannot keep a write (%s)", self.directory, error.strerror)
            return False
        return True

    def pending(self) -> int:
        """How many writes wait to be replayed."""
        try:
            return sum(1 for entry in os.scandir(self.directory) if entry.name.endswith(_SUFFIX))
        except OSError:
            return 0

    def replay(self, apply: Callable[[dict[str, Any]], None]) -> int:
        """Apply each pending write, oldest first; stop at the first that fails.

        Each entry is claimed by renaming it, so two processes never apply the same one at
        once; a failed entry is renamed back to wait for the next replay.

        :returns: how many writes were applied.
        """
        self._reclaim_stale()
        try:
            names = sorted(e.name for e in os.scandir(self.directory) if e.name.endswith(_SUFFIX))
        except OSError:
            return 0
        applied = 0
        for name in names:
            path = self.directory / name
            claimed = path.with_name(f"{name}{_CLAIMED}{os.getpid()}")
            try:
                os.rename(path, claimed)
            except OSError:
                continue  # another process took it
            try:
                entry = json.loads(claimed.read_bytes())
            except (OSError, ValueError):
                # Unreadable: set aside for the operator rather than block every later write.
                log.error("spool entry %s is unreadable; moved aside as %s.bad", name, name)
                os.rename(claimed, path.with_name(name + ".bad"))
                continue
            try:
                apply(entry)
            except Exception:
                os.rename(claimed, path)
                raise
            claimed.unlink(missing_ok=True)
            applied += 1
        return applied

    def _reclaim_stale(self) -> None:
        """Hand back entries claimed by a process that died while replaying them."""
        try:
            entries = [e for e in os.scandir(self.directory) if _CLAIMED in e.name]
        except OSError:
            return
        for entry in entries:
            name, _, pid = entry.name.rpartition(_CLAIMED)
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue
            try:
                os.rename(entry.path, self.directory / name)
            except OSError:
                continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
