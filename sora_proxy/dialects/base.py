"""What every dialect provides: the seam between describing an upstream and sending to it.

A :class:`Dialect` is data in, data out, after httpx's transport seam: it turns the proxy's
intent (an OpenAI-shaped path, headers, a create plan) into an :class:`OutgoingRequest`, and the
upstream's answer bytes into what the caller sees. It never opens a connection; the
:class:`~sora_proxy.client.UpstreamClient` does that, whatever the dialect.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan

#: A request body: bytes, or chunks streamed as they come (an upload relayed as it arrives).
Body = bytes | Iterable[bytes]


@dataclass(frozen=True)
class EncodedBody:
    """A request body and its Content-Type."""

    content: Body
    content_type: str

    @classmethod
    def json(cls, data: Mapping[str, Any]) -> EncodedBody:
        """``data`` as a JSON body."""
        return cls(json.dumps(data).encode("utf-8"), "application/json")


@dataclass(frozen=True)
class OutgoingRequest:
    """Everything needed to send one request upstream, credentials included."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Body | None = None


#: Builds the one-line error for a bad ``[[upstream]]`` entry.
Fail = Callable[[str], ConfigError]


class Dialect(ABC):
    """One kind of upstream: how it authenticates, where its paths are, how a create is
    encoded for it and how its answers become what the caller sees."""

    #: The value of ``dialect = "..."`` in an ``[[upstream]]`` table.
    name: ClassVar[str]
    #: The ``[[upstream]]`` keys this dialect reads, beyond those every upstream has.
    config_keys: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abstractmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> Dialect:
        """The dialect an ``[[upstream]]`` table describes (its own keys only).

        :raises ConfigError: through ``fail``, naming the key at fault.
        """

    @abstractmethod
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
        """The request for ``path`` (an OpenAI Videos path such as ``/videos/abc``) at
        ``upstream``, with its credentials: the upstream's key, or the caller's own
        ``Authorization`` in pass-through."""

    @abstractmethod
    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """The body of a create for ``upstream``: its model names, its reference form."""

    @abstractmethod
    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """An answer as the caller should see it (e.g. the caller's model name, not the
        upstream's deployment name); ``body`` unchanged when nothing needs changing."""
