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

from .catalog import Catalog, Upstream
from .errors import InvalidRequest, NotFound, ProxyError, UpstreamUnreachable
from .store import Kind, OwnedResource, Store
from .store.durable import DurableWrites
from .streaming import parse_object

log = logging.getLogger("sora_proxy.ownership")
_LABELS = {"video": ("Video", "video_id"), "character": ("Character", "character_id")}
#: Create-body fields that name characters by id (an object ``{"id"}`` or the id itself).
CHARACTER_FIELDS = ("characters", "character_ids")


def not_found(kind: Kind, resource_id: str) -> NotFound:
    """The 404 for a resource that does not exist *or* is someone else's."""
    label, param = _LABELS[kind]
    return NotFound(
        f"{label} with id '{resource_id}' not found.", param=param, code=f"{kind}_not_found"
    )


def _json_list(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidRequest(f"Invalid '{name}': Must be a list.", param=name) from None


class Ownership:
    """Records and checks ownership in a :class:`~sora_proxy.store.Store`.

    Each record names the upstream that holds the resource, so every by-id call goes back to
    that upstream, with its key.
    """

    def __init__(self, store: Store, writes: DurableWrites) -> None:
        self.store = store
        self.writes = writes

    def require(self, owner: str, resource_id: str, kind: Kind) -> OwnedResource:
        """The record of ``resource_id`` if ``owner`` owns it, else the not-found 404.

        A record still waiting in the spool (the store was down when it was made) is replayed
        first, so a caller never gets a 404 for something the proxy knows is theirs.
        """
        record = self.store.get(resource_id)
        if record is None and self.writes.pending() and self.writes.replay():
            record = self.store.get(resource_id)
        if record is None or record.owner != owner or record.kind != kind:
            raise not_found(kind, resource_id)
        return record

    def upstream_of(self, owner: str, resource_id: str, kind: Kind, catalog: Catalog) -> Upstream:
        """The upstream holding ``resource_id``, if ``owner`` owns it (else the 404)."""
        return self.upstream_for(self.require(owner, resource_id, kind), catalog)

    @staticmethod
    def upstream_for(record: OwnedResource, catalog: Catalog) -> Upstream:
        """The upstream ``record`` names (502 if it is no longer configured)."""
        upstream = catalog.upstreams.get(record.upstream)
        if upstream is None:
            raise UpstreamUnreachable(
                "The upstream that holds this resource is no longer configured.",
                code="upstream_not_configured",
            )
        return upstream

    def require_referenced(self, owner: str, fields: Mapping[str, Any]) -> None:
        """Every character a body names by id (``characters``, ``character_ids``) must be
        ``owner``'s own, as on every by-id route: the upstream key is shared."""
        for name in CHARACTER_FIELDS:
            value = fields.get(name)
            if value is None:
                continue
            if isinstance(value, str):
                value = _json_list(value, name)
            if not isinstance(value, list):
                raise InvalidRequest(f"Invalid '{name}': Must be a list.", param=name)
            for index, item in enumerate(value):
                character_id = item.get("id") if isinstance(item, dict) else item
                if not isinstance(character_id, str) or not character_id:
                    raise InvalidRequest(
                        f"Invalid '{name}[{index}]': Must be a character id or {{\"id\": ...}}.",
                        param=f"{name}[{index}]",
                    )
                self.require(owner, character_id, "character")

    def record_created(self, owner: str, kind: Kind, body: bytes, upstream: str) -> None:
        """Record the resource an upstream 2xx answer created, and the upstream holding it.

        Never raises: the write is retried, then spooled (see :class:`DurableWrites`).
        """
        created = parse_object(body)
        resource_id = created.get("id") if created else None
        if not isinstance(resource_id, str) or not resource_id:
            # Without an id the caller could never reach the resource again; say so loudly.
            log.error("upstream created a %s but its answer has no id; not recorded", kind)
            return
        self.writes.record(OwnedResource(resource_id, owner, upstream, kind, time.time(), created))

    def refresh(self, resource_id: str, body: bytes) -> None:
        """Keep the latest object the upstream returned for ``resource_id``.

        A cache write: if the store cannot take it, the caller still gets the answer.
        """
        latest = parse_object(body)
        if latest is None or latest.get("id") != resource_id:
            return
        try:
            self.store.update_object(resource_id, latest)
        except ProxyError:
            log.warning("could not refresh the stored object of a video; answered anyway")

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
        data = [
            record.last_object or {"id": record.resource_id, "object": "video"}
            for record in records
        ]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
