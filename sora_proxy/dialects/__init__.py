"""Each kind of upstream, described in one module, chosen by ``dialect = "..."`` per upstream.

Adding a dialect is its module, one line in :data:`DIALECTS`, its simulator and its tests.
"""

from __future__ import annotations

from .base import Body, Dialect, EncodedBody, Fail, OutgoingRequest
from .openai import OpenAIDialect

__all__ = ["DIALECTS", "Body", "Dialect", "EncodedBody", "Fail", "OpenAIDialect", "OutgoingRequest"]

#: Every dialect by the name an ``[[upstream]]`` table gives.
DIALECTS: dict[str, type[Dialect]] = {
    OpenAIDialect.name: OpenAIDialect,
}
