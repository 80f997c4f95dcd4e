"""Reading a finished video's variants from its upstream, for the archive.

The same sources a caller's download uses (:mod:`sora_proxy.jobs`): the upstream's content
endpoint with its credentials, or a result URL fetched with none under ``fetch.py``'s rules;
here read by the tracker, never by a request thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from urllib3.exceptions import HTTPError
from werkzeug.datastructures import Headers

from .client import forwarded_headers
from .errors import ProxyError, ReferenceFetchFailed
from .fetch import FetchPolicy, open_url
from .store import OwnedResource
from .streaming import CHUNK_SIZE

if TYPE_CHECKING:
    from .catalog import Upstream
    from .extension import ProxyState

#: What each variant is, when the upstream does not say.
DEFAULT_TYPES = {"video": "video/mp4", "thumbnail": "image/webp", "spritesheet": "image/webp"}


class CopyFailed(Exception):
    """The upstream's copy could not be read now (gone, expired, unreachable, not a video)."""


@dataclass(frozen=True)
class UpstreamBytes:
    """An open variant: its chunks (read once) and its type."""

    chunks: Iterator[bytes]
    content_type: str


@contextmanager
def open_variant(
    state: ProxyState, record: OwnedResource, upstream: Upstream, variant: str
) -> Iterator[UpstreamBytes | None]:
    """Open ``variant`` of ``record``'s video at its upstream; ``None`` when the upstream
    makes no such variant (the archive makes thumbnails itself then).

    :raises CopyFailed: the upstream's copy cannot be read now.
    """
    if record.handle is None:
        params = {} if variant == "video" else {"variant": variant}
        path: str | None = f"/videos/{record.resource_id}/content"
        url = None
    else:
        source = upstream.dialect.content_source(upstream, record.handle, variant)
        if source is None:
            yield None
            return
        path, url, params = source.path, source.url, {}
    if url is not None:
        with _open_result_url(state, url) as opened:
            yield opened
        return
    assert path is not None
    try:
        response = state.client.send(
            upstream,
            "GET",
            path,
            headers=forwarded_headers(Headers(), read_whole=True),
            params=params,
        )
    except ProxyError as error:
        raise CopyFailed(f"{upstream.name} could not be reached ({error.code})") from None
    try:
        if variant != "video" and response.status_code in (400, 404):
            yield None  # an OpenAI-shaped upstream without this variant
            return
        if response.status_code != 200:
            raise CopyFailed(
                f"{upstream.name} answered the download with HTTP {response.status_code}"
            )
        content_type = _checked_type(response.headers.get("Content-Type"), variant)
        chunks = response.raw.stream(CHUNK_SIZE, decode_content=True)
        yield UpstreamBytes(_guarded(chunks, upstream.name), content_type)
    finally:
        response.close()


@contextmanager
def _open_result_url(state: ProxyState, url: str) -> Iterator[UpstreamBytes]:
    policy = FetchPolicy(
        max_bytes=1 << 40, allow_private=state.settings.fetch_allow_private, deadline=3600.0
    )
    try:
        with open_url(url, policy, param="video_id") as fetched:
            content_type = _checked_type(fetched.content_type, "video")
            yield UpstreamBytes(
                _guarded(fetched.iter_chunks(CHUNK_SIZE), "the result host"), content_type
            )
    except ReferenceFetchFailed as error:
        raise CopyFailed(f"the result URL could not be fetched ({error.message})") from None


def _guarded(chunks: Iterator[bytes], source: str) -> Iterator[bytes]:
    """``chunks``, with a transfer broken off midway said as :class:`CopyFailed` (the archive
    then keeps nothing of it, and the copy is tried again later)."""
    try:
        yield from chunks
    except (HTTPError, OSError, ReferenceFetchFailed) as error:
        raise CopyFailed(f"the download from {source} broke off ({type(error).__name__})") from None


def _checked_type(declared: str | None, variant: str) -> str:
    """The variant's type; a JSON document served as a video is an error page, not bytes."""
    media = (declared or "").split(";")[0].strip().lower()
    if media in ("application/json", "text/html", "text/plain"):
        raise CopyFailed(f"the upstream served its {variant} as {media}")
    if not media or media in ("application/octet-stream", "binary/octet-stream"):
        return DEFAULT_TYPES.get(variant, "application/octet-stream")
    return media
