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
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from ..errors import ConfigError, InvalidRequest, ProxyError

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan

#: A request body: bytes, or chunks streamed as they come (an upload relayed as it arrives).
Body = bytes | Iterable[bytes]


@dataclass(frozen=True)
class EncodedBody:
    """A request body and its Content-Type, and where it goes when the dialect says (a create
    whose path names the model, as Gemini's ``/models/{model}:predictLongRunning``)."""

    content: Body
    content_type: str
    path: str | None = None

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

#: The Videos API operations an upstream may or may not have.
Operation = Literal[
    "create",
    "retrieve",
    "list",
    "delete",
    "content",
    "remix",
    "edits",
    "extensions",
    "characters",
]
ALL_OPERATIONS: frozenset[Operation] = frozenset(get_args(Operation))


@dataclass(frozen=True)
class JobState:
    """What an upstream said about a job, in OpenAI's words (for proxy-owned videos).

    :param upstream_id: the upstream's own handle for the job.
    :param video: ``video`` object fields (``status`` one of the four, ``progress`` 0..100,
        ``error`` ``{code, message}`` or ``None``); ``id`` is the proxy's to set.
    :param result_urls: where the finished video is; the dialect's :meth:`Dialect.content_source`
        decides whether one is fetched without credentials (a signed or public link) or
        asked with them (a keyed API URI).
    :param polling_url: where to poll, when the upstream names it.
    """

    upstream_id: str
    video: dict[str, Any]
    result_urls: tuple[str, ...] = ()
    polling_url: str | None = None

    def handle(self) -> dict[str, Any]:
        """What the store keeps to reach this job again."""
        return {
            "id": self.upstream_id,
            "polling_url": self.polling_url,
            "result_urls": list(self.result_urls),
        }


@dataclass(frozen=True)
class ContentSource:
    """Where a finished video's bytes are: an upstream ``path`` asked with the upstream's
    credentials, or a result ``url`` fetched with none (under ``fetch.py``'s rules)."""

    path: str | None = None
    url: str | None = None


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
        """The request for ``path`` (an OpenAI Videos path such as ``/videos/abc``, or the
        dialect's own) at ``upstream``: ``base_url + path``, the upstream's query, and the
        :meth:`credentials`."""
        return OutgoingRequest(
            method=method,
            url=upstream.base_url + path,
            params={**upstream.query, **(params or {})},
            headers={**headers, **self.credentials(upstream, caller_authorization)},
            body=body,
        )

    def credentials(self, upstream: Upstream, caller_authorization: str | None) -> dict[str, str]:
        """The credential headers: ``Authorization: Bearer`` with the upstream's key, or the
        caller's own ``Authorization`` in pass-through (no key configured)."""
        if upstream.api_key is None:
            return {"Authorization": caller_authorization} if caller_authorization else {}
        return {"Authorization": f"Bearer {upstream.api_key}"}

    @abstractmethod
    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """The body of a create for ``upstream``: its model names, its reference form."""

    @abstractmethod
    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """An answer as the caller should see it (e.g. the caller's model name, not the
        upstream's deployment name); ``body`` unchanged when nothing needs changing."""

    # -- proxy-owned videos: for upstreams whose answers are not OpenAI's own -------------------

    @property
    def proxy_owned(self) -> bool:
        """True when the proxy mints its own ids and keeps each job's state: retrieve polls the
        upstream through :meth:`read_job`, list comes from the store, content from
        :meth:`content_source`. False: the upstream's answers go back as they are."""
        return False

    @property
    def operations(self) -> frozenset[Operation]:
        """The operations this upstream has; any other is refused before anything is sent."""
        return ALL_OPERATIONS

    def read_job(self, upstream: Upstream, status: int, body: bytes) -> JobState:
        """A create or poll answer (2xx) as a :class:`JobState` (proxy-owned dialects)."""
        raise NotImplementedError(f"dialect {self.name} does not own its videos")

    def read_poll(self, upstream: Upstream, status: int, body: bytes) -> JobState | None:
        """A poll answer: the job's state, or ``None`` when it says nothing new (a transient
        error: the stored state stands)."""
        if 200 <= status < 300:
            return self.read_job(upstream, status, body)
        return None

    def poll_path(self, upstream: Upstream, handle: Mapping[str, Any]) -> str:
        """The path (or absolute URL under ``base_url``) to poll a job (proxy-owned)."""
        return f"/videos/{handle['id']}"

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """Where a finished job's ``variant`` is, or ``None`` when this upstream has none."""
        return ContentSource(path=f"/videos/{handle['id']}/content")

    def read_error(self, upstream: Upstream, status: int, body: bytes) -> ProxyError | None:
        """An upstream's error answer as the OpenAI envelope, or ``None`` to relay it as is
        (it already is one)."""
        return None


def refuse_unsendable(upstream: Upstream, plan: CreatePlan, *, extra_files: bool = False) -> None:
    """Refuse, before anything is sent, a create the upstream cannot take: a ``file_id``
    reference (only OpenAI's JSON form has one), and extra file parts unless ``extra_files``.

    :raises InvalidRequest: ``unsupported_by_upstream``, naming the field.
    """
    if plan.file_id is not None:
        raise InvalidRequest(
            f"The upstream '{upstream.name}' takes no file ids; send the image itself.",
            param="input_reference.file_id",
            code="unsupported_by_upstream",
        )
    if plan.extra_files and not extra_files:
        raise InvalidRequest(
            f"The upstream '{upstream.name}' takes no file part '{plan.extra_files[0][0]}'.",
            param=plan.extra_files[0][0],
            code="unsupported_by_upstream",
        )
