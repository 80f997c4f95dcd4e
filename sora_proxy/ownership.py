"""Who may see what: with one upstream key shared by many callers, each sees only their own.

The upstream sees one account, so without this any caller could list, download or delete every
other caller's videos. Every answer that creates a video or character is recorded against its
caller; every by-id call checks the record first. A resource the caller does not own gets the
same 404 as one that does not exist, so its existence is never revealed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequest, NotFound
from .store import Kind, OwnedResource, Store

log = logging.getLogger("sora_proxy.ownership")
_LABELS = {"video": ("Video", "video_id"), "character": ("Character", "character_id")}


def not_found(kind: Kind, resource_id: str) -> NotFound:
    """The 404 for a resource that does not exist *or* is someone else's."""
    label, param = _LABELS[kind]
    return NotFound(
        f"{label} with id '{resource_id}' not found.", param=param, code=f"{kind}_not_found"
    )


def parse_object(body: bytes) -> dict[str, Any] | None:
    """The JSON object in an upstream answer, or ``None`` if it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class Ownership:
    """Records and checks ownership in a :class:`~sora_proxy.store.Store`.

    Each record names the upstream that holds the resource, so every by-id call goes back to
    that upstream, with its key.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def require(self, owner: str, resource_id: str, kind: Kind) -> OwnedResource:
        """The record of ``resource_id`` if ``owner`` owns it, else the not-found 404."""
        record = self.store.get(resource_id)
        if record is None or record.owner != owner or record.kind != kind:
            raise not_found(kind, resource_id)
        return record

    def record_created(self, owner: str, kind: Kind, body: bytes, upstream: str) -> None:
        """Record the resource an upstream 2xx answer created, and the upstream holding it."""
        created = parse_object(body)
        resource_id = created.get("id") if created else None
        if not isinstance(resource_id, str) or not resource_id:
            # Without an id the caller could never reach the resource again; say so loudly.
            log.error("upstream created a %s but its answer has no id; not recorded", kind)
            return
        self.store.record(
            OwnedResource(resource_id, owner, upstream, kind, time.time(), created)
        )

    def refresh(self, resource_id: str, body: bytes) -> None:
        """Keep the latest object the upstream returned for ``resource_id``."""
        latest = parse_object(body)
        if latest is not None and latest.get("id") == resource_id:
            self.store.update_object(resource_id, latest)

    def list_page(self, owner: str, query: Mapping[str, Any]) -> dict[str, Any]:
        """``owner``'s videos in the OpenAI list shape, newest first unless ``order=asc``."""
        limit = int(query.get("limit", 20))
        order = query.get("order", "desc")
        try:
            records, has_more = self.store.list_owned(
                owner, "video", after=query.get("after"), limit=limit, order=order
            )
        except KeyError:
            raise InvalidRequest(
                f"Invalid 'after': no video with id '{query.get('after')}'.", param="after"
            ) from None
        data = [record.last_object or {"id": record.resource_id, "object": "video"}
                for record in records]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
