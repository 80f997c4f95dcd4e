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
from .openai import OpenAIDialect
from .vllm_omni import VllmOmniDialect

__all__ = [
    "ALL_OPERATIONS",
    "DIALECTS",
    "Body",
    "ContentSource",
    "Dialect",
    "EncodedBody",
    "Fail",
    "JobState",
    "OpenAIDialect",
    "Operation",
    "OutgoingRequest",
    "VllmOmniDialect",
]

#: Every dialect by the name an ``[[upstream]]`` table gives.
DIALECTS: dict[str, type[Dialect]] = {
    OpenAIDialect.name: OpenAIDialect,
    VllmOmniDialect.name: VllmOmniDialect,
}
