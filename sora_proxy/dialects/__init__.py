"""Each kind of upstream, described in one module, chosen by ``dialect = "..."`` per upstream.

Adding a dialect is its module, one line in :data:`DIALECTS`, its simulator and its tests.
"""

from __future__ import annotations

from .base import (
    ALL_OPERATIONS,
    Body,
    ContentSource,
    Dialect,
    EncodedBody,
    Fail,
    JobState,
    Operation,
    OutgoingRequest,
)
from .gemini import GeminiDialect
from .openai import OpenAIDialect
from .openrouter import OpenRouterDialect
from .vllm_omni import VllmOmniDialect
from .xai import XaiDialect

__all__ = [
    "ALL_OPERATIONS",
    "DIALECTS",
    "Body",
    "ContentSource",
    "Dialect",
    "EncodedBody",
    "Fail",
    "GeminiDialect",
    "JobState",
    "OpenAIDialect",
    "OpenRouterDialect",
    "Operation",
    "OutgoingRequest",
    "VllmOmniDialect",
    "XaiDialect",
]

#: Every dialect by the name an ``[[upstream]]`` table gives.
DIALECTS: dict[str, type[Dialect]] = {
    OpenAIDialect.name: OpenAIDialect,
    VllmOmniDialect.name: VllmOmniDialect,
    OpenRouterDialect.name: OpenRouterDialect,
    GeminiDialect.name: GeminiDialect,
    XaiDialect.name: XaiDialect,
}
