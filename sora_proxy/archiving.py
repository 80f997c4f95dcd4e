"""Keeping what was paid for: a finished video's bytes copied into the archive, once.

The tracker runs :func:`archive_video` for each video that completed. Each variant (the video,
its thumbnail, its spritesheet) is copied from the upstream into the archive
(:mod:`sora_proxy.archive`), whose writes become visible only when complete; a variant already
there is skipped, so a copy cut short by a dead worker resumes where it stopped. Where the
upstream has no thumbnail or spritesheet, they are made once from the archived video
(:mod:`sora_proxy.thumbnails`). The video's ``expires_at`` then becomes the archive's retention.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Response, request

from .archive import Archive, ArchiveError, archived_response
from .archive_copy import CopyFailed, open_variant
from .errors import ProxyError
from .store import Task
from .thumbnails import ThumbnailError, make_spritesheet, make_thumbnail

if TYPE_CHECKING:
    from .extension import ProxyState
    from .handoff import Handoff

log = logging.getLogger("sora_proxy.archive")

VARIANTS = ("video", "thumbnail", "spritesheet")
#: Attempts at copying a video before giving up: backing off to an hour apart, about a day
#: in all (as long as the shortest-lived upstream copies, xAI's and resellers' 24 h links).
MAX_ATTEMPTS = 30
_MAKERS = {"thumbnail": make_thumbnail, "spritesheet": make_spritesheet}
_EXTENSIONS = {"video/mp4": "mp4", "image/webp": "webp", "image/jpeg": "jpg", "video/webm": "webm"}


def archive_key(video_id: str, variant: str) -> str:
    """Where ``variant`` of ``video_id`` is kept in the archive."""
    return f"videos/{video_id}/{variant}"


def video_prefix(video_id: str) -> str:
    """The prefix of every variant of ``video_id``."""
    return f"videos/{video_id}/"


def archive_video(state: ProxyState, task: Task) -> float | None:
    """Copy every variant of ``task``'s video into the archive (the tracker's ``archive:``
    step): ``None`` when done, or when to try again."""
    assert state.records is not None and state.archive is not None
    archive, store = state.archive, state.records.store
    video_id = task.payload["video_id"]
    record = store.get(video_id)
    upstream = state.catalog.upstreams.get(record.upstream) if record is not None else None
    if record is None or upstream is None:
        return None
    made_here: list[str] = []
    try:
        for variant in VARIANTS:
            key = archive_key(video_id, variant)
            if archive.stat(key) is not None:
                continue
            with open_variant(state, record, upstream, variant) as source:
                if source is None:
                    made_here.append(variant)
                    continue
                stored = archive.put(key, source.chunks, content_type=source.content_type)
            _count(state, variant, "upstream", stored.size)
        if made_here:
            _make_variants(state, video_id, made_here)
    except (CopyFailed, ArchiveError) as error:
        return _try_again(task, video_id, str(error))
    if store.get(video_id) is None:
        archive.delete_prefix(video_prefix(video_id))  # deleted while it was being copied
        return None
    _keep_expiry(state, video_id)
    log.info("video %s archived", video_id)
    if state.settings.archive_max_bytes is not None:
        sweep(state)  # the cap holds after each copy, not only at the periodic sweep
    return None


def _make_variants(state: ProxyState, video_id: str, variants: list[str]) -> None:
    """Make the thumbnail and spritesheet the upstream lacks from the archived video."""
    assert state.archive is not None
    with _local_copy(state.archive, archive_key(video_id, "video")) as path:
        for variant in variants:
            try:
                image = _MAKERS[variant](path)
            except ThumbnailError as error:
                log.warning("no %s could be made for video %s: %s", variant, video_id, error)
                continue
            stored = state.archive.put(
                archive_key(video_id, variant), iter((image,)), content_type="image/webp"
            )
            _count(state, variant, "made", stored.size)


@contextmanager
def _local_copy(archive: Archive, key: str) -> Iterator[Path]:
    """A file holding ``key``: the archive's own file, or a temporary download of it."""
    local = archive.local_path(key)
    if local is not None:
        yield local
        return
    with tempfile.NamedTemporaryFile(prefix="sora-proxy-video-", suffix=".mp4") as copy:
        for chunk in archive.read(key):
            copy.write(chunk)
        copy.flush()
        os.fsync(copy.fileno())
        yield Path(copy.name)


def _keep_expiry(state: ProxyState, video_id: str) -> None:
    """The video's ``expires_at`` becomes the archive's: when its copy is deleted."""
    assert state.records is not None and state.archive is not None
    stored = state.archive.stat(archive_key(video_id, "video"))
    record = state.records.store.get(video_id)
    if stored is None or record is None:
        return
    expires_at = int(stored.stored_at + state.settings.archive_days * 86400)
    video = {**(record.last_object or {}), "expires_at": expires_at}
    try:
        state.records.store.update_object(video_id, video)
    except ProxyError:
        log.warning("could not record the archive's expiry of video %s", video_id)


def _try_again(task: Task, video_id: str, why: str) -> float | None:
    if task.attempts >= MAX_ATTEMPTS:
        log.error(
            "video %s could not be archived after %d attempts: %s", video_id, task.attempts, why
        )
        return None
    delay = min(3600.0, 5.0 * 2.0**task.attempts)
    log.warning("archiving video %s failed (%s); trying again in %.0f s", video_id, why, delay)
    return time.time() + delay


def archived_variant(
    state: ProxyState, video_id: str, variant: str, handoff: Handoff | None = None
) -> Response | None:
    """``variant`` of ``video_id`` served from the archive (Range, ETag, If-None-Match), or
    ``None`` when the archive does not hold it (not yet copied, past its retention, evicted,
    or the archive unreachable: the upstream's copy is tried then).

    :param handoff: this request's hand-off to nginx, if it has one: a body from a local
        archive is then sent by nginx (:meth:`~sora_proxy.handoff.Handoff.archived`).
    """
    if state.archive is None:
        return None
    try:
        stored = state.archive.stat(archive_key(video_id, variant))
    except ArchiveError as error:
        log.warning("the archive could not be read (%s); trying the upstream", error)
        return None
    if stored is None or time.time() > stored.stored_at + state.settings.archive_days * 86400:
        return None
    archive = state.archive
    hand_off = None
    if handoff is not None:
        hand_off = lambda headers: handoff.archived(  # noqa: E731
            archive, stored.key, stored.size, headers
        )
    response = archived_response(
        archive, stored, request.headers, method=request.method, hand_off=hand_off
    )
    # As OpenAI names its downloads (and the upstream's own answer said).
    extension = _EXTENSIONS.get(stored.content_type, "bin")
    response.headers["Content-Disposition"] = f'attachment; filename="{video_id}.{extension}"'
    return response


def forget_archived(state: ProxyState, video_id: str) -> None:
    """Delete a deleted video's archived bytes (a failure is logged; they go at the end of
    the archive's retention then)."""
    if state.archive is None:
        return
    try:
        state.archive.delete_prefix(video_prefix(video_id))
    except ArchiveError as error:
        log.warning("archived bytes of deleted video %s not deleted yet: %s", video_id, error)


def sweep(state: ProxyState) -> None:
    """Delete what the archive keeps past its retention, and the oldest beyond its size cap."""
    assert state.archive is not None
    settings = state.settings
    try:
        deleted = state.archive.sweep(
            now=time.time(),
            retention=settings.archive_days * 86400,
            max_bytes=settings.archive_max_bytes,
        )
    except ArchiveError as error:
        log.warning("sweeping the archive failed: %s", error)
        return
    if deleted:
        log.info("archive sweep deleted %d object(s)", len(deleted))


def _count(state: ProxyState, variant: str, source: str, size: int) -> None:
    if state.metrics is not None:
        state.metrics.archived.labels(variant, source).inc()
        state.metrics.archived_bytes.inc(size)
