"""The openrouter dialect (being written: see shared/dialects/openrouter.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import Body, Dialect, EncodedBody, Fail, OutgoingRequest

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan


class OpenRouterDialect(Dialect):
    """Placeholder until the dialect lands; refuses every use."""

    name = "openrouter"

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> OpenRouterDialect:
        """Not yet available."""
        raise fail("dialect 'openrouter' is not available yet")

    def request(
        self,
        upstream: Upstream,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        body: Body | None = None,
        caller_authorization: str | None = None,
    ) -> OutgoingRequest:
        """Not yet available."""
        raise NotImplementedError

    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """Not yet available."""
        raise NotImplementedError

    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """Not yet available."""
        raise NotImplementedError
