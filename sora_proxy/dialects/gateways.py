"""OpenAI-format gateways as upstreams: new-api, LiteLLM proxies, resellers that answer 202.

They speak OpenAI's paths and forms, so they are the ``openai`` dialect with ``gateway = …``,
but their answers differ where it hurts (``shared/dialects/openai-gateways.md``): other status
words, ids, error shapes, results at signed URLs, missing operations. The proxy therefore owns
their videos: its own ids, their state in the store, their words translated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ProxyError
from ..streaming import parse_object
from .answers import error_from_body, job_from_object
from .base import ContentSource, JobState, Operation
from .openai import OpenAIDialect

if TYPE_CHECKING:
    from ..catalog import Upstream


class GatewayDialect(OpenAIDialect):
    """What every OpenAI-format gateway shares: proxy-owned videos, tolerant reading."""

    #: The value of ``gateway = "..."`` that selects this class.
    gateway: ClassVar[str]
    _operations: ClassVar[frozenset[Operation]]
    #: Error codes meaning "no such job".
    _not_found_codes: ClassVar[tuple[str, ...]] = ()

    @property
    def proxy_owned(self) -> bool:
        """Gateways' answers are not OpenAI's own: the proxy keeps the truth."""
        return True

    @property
    def operations(self) -> frozenset[Operation]:
        """What this gateway has."""
        return self._operations

    def read_job(self, upstream: Upstream, status: int, body: bytes) -> JobState:
        """A create or poll answer as a job (202 is as good as 200)."""
        answer = parse_object(body)
        if answer is None or not (answer.get("id") or answer.get("task_id")):
            raise ProxyError(
                f"The upstream '{upstream.name}' answered without a job id.",
                code="upstream_bad_answer",
                status=502,
                headers={"x-should-retry": "false"},
            )
        return job_from_object(answer, result_urls=self._result_urls(answer))

    def read_error(self, upstream: Upstream, status: int, body: bytes) -> ProxyError | None:
        """Whatever the gateway's error shape, the OpenAI envelope."""
        return error_from_body(status, body, not_found_codes=self._not_found_codes)

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """A result URL when the gateway gave one, else its content endpoint; no thumbnails
        where the gateway would answer them with the MP4."""
        if variant != "video":
            return None
        urls = handle.get("result_urls") or []
        if urls:
            return ContentSource(url=urls[0])
        return ContentSource(path=f"/videos/{handle['id']}/content")

    def _result_urls(self, answer: Mapping[str, Any]) -> list[str]:
        return []


class NewApiDialect(GatewayDialect):
    """new-api (QuantumNous): ``task_…`` ids, ``unknown`` status, ``metadata.url`` results,
    ``{code, message, data}`` errors, no list, delete, edits, extensions or characters."""

    gateway = "new-api"
    _operations = frozenset({"create", "retrieve", "content", "remix"})
    _not_found_codes = ("task_not_exist",)

    def _result_urls(self, answer: Mapping[str, Any]) -> list[str]:
        metadata = answer.get("metadata")
        url = metadata.get("url") if isinstance(metadata, Mapping) else None
        return [url] if isinstance(url, str) else []


class LiteLLMDialect(GatewayDialect):
    """A LiteLLM proxy: long base64 ids, no DELETE, every content answer labelled MP4
    (``variant`` ignored, a not-ready error served as a 200 "video")."""

    gateway = "litellm"
    _operations = frozenset(
        {"create", "retrieve", "list", "content", "remix", "edits", "extensions", "characters"}
    )


class ResellerDialect(GatewayDialect):
    """A reseller answering 202 with ``polling_url``: ``cancelled``/``expired``, signed
    ``unsigned_urls``, thumbnails through ``/content?variant=``, 429 on fast polls."""

    gateway = "reseller"
    _operations = frozenset(
        {
            "create",
            "retrieve",
            "list",
            "delete",
            "content",
            "remix",
            "edits",
            "extensions",
            "characters",
        }
    )

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """The signed URL for the video; thumbnails and spritesheets from ``/content``."""
        if variant == "video":
            return super().content_source(upstream, handle, variant)
        return ContentSource(path=f"/videos/{handle['id']}/content?variant={variant}")

    def _result_urls(self, answer: Mapping[str, Any]) -> list[str]:
        urls = answer.get("unsigned_urls")
        return [url for url in urls if isinstance(url, str)] if isinstance(urls, list) else []


#: Every gateway style by its ``gateway = "..."`` name.
GATEWAYS: dict[str, type[GatewayDialect]] = {
    dialect.gateway: dialect for dialect in (NewApiDialect, LiteLLMDialect, ResellerDialect)
}
