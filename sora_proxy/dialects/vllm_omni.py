"""vLLM-Omni's self-hosted video server (``vllm serve <model> --omni``) as an upstream.

Its ``/v1/videos`` looks like OpenAI's (``shared/dialects/vllm-omni.md``) but takes forms
only, wants ``model`` to be the served name, answers a failed job's retrieve with HTTP 500 or
400 and the job as the body, serves only MP4 content (``variant`` ignored), has no remix,
edits, extensions or characters, and keeps its jobs in memory. The proxy owns these videos.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from urllib3 import encode_multipart_formdata

from ..errors import ProxyError
from ..references import PARAM as REFERENCE_PARAM
from ..streaming import parse_object
from .answers import error_from_body, job_from_object
from .base import (
    ContentSource,
    Dialect,
    EncodedBody,
    Fail,
    JobState,
    Operation,
    refuse_unsendable,
)
from .openai import form_text

if TYPE_CHECKING:
    from ..catalog import Upstream
    from ..plan import CreatePlan


class VllmOmniDialect(Dialect):
    """vLLM-Omni's OpenAI-compatible video serving.

    :param fps: when set, ``num_frames = seconds * fps`` and ``fps`` are sent, so the length
        is exact (vLLM-Omni otherwise assumes 24 fps and the model rounds the frame count).
    """

    name = "vllm-omni"
    config_keys = frozenset({"fps"})

    def __init__(self, fps: int | None = None) -> None:
        self.fps = fps

    @classmethod
    def from_config(cls, entry: Mapping[str, Any], fail: Fail) -> VllmOmniDialect:
        """Read ``fps``."""
        fps = entry.get("fps")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, int) or fps < 1):
            raise fail("fps must be a whole number of frames per second (1 or more)")
        return cls(fps)

    @property
    def proxy_owned(self) -> bool:
        """Its failed jobs are HTTP errors and its ids live in one process's memory: the proxy
        keeps the truth."""
        return True

    @property
    def operations(self) -> frozenset[Operation]:
        """Create, retrieve, list, delete and the MP4; nothing else."""
        return frozenset({"create", "retrieve", "list", "delete", "content"})

    def credentials(self, upstream: Upstream, caller_authorization: str | None) -> dict[str, str]:
        """A bearer key only when the server was started with one (``--api-key``)."""
        return {"Authorization": f"Bearer {upstream.api_key}"} if upstream.api_key else {}

    def encode_create(self, upstream: Upstream, plan: CreatePlan) -> EncodedBody:
        """Always a form: the served model name, and the reference as an ``input_reference``
        file; ``num_frames`` and ``fps`` when configured."""
        refuse_unsendable(upstream, plan, extra_files=True)
        fields = dict(plan.fields)
        fields["model"] = upstream.models[plan.model].deployment
        seconds = plan.seconds
        if self.fps is not None and seconds is not None:
            fields["num_frames"] = str(int(seconds) * self.fps)
            fields["fps"] = str(self.fps)
        parts: list[Any] = [(name, form_text(value)) for name, value in fields.items()]
        if plan.image is not None:
            image = plan.image
            parts.append((REFERENCE_PARAM, (image.filename, image.data, image.mime_type)))
        parts += [(name, (filename, data, mime)) for name, filename, data, mime in plan.extra_files]
        content, content_type = encode_multipart_formdata(parts)
        return EncodedBody(content, content_type)

    def present(self, upstream: Upstream, body: bytes, caller_model: str | None = None) -> bytes:
        """Answers are turned into the proxy's own objects (:meth:`read_job`)."""
        return body

    def read_job(self, upstream: Upstream, status: int, body: bytes) -> JobState:
        """A ``VideoResponse`` (``video_gen_…``) as a job."""
        answer = parse_object(body)
        if answer is None or not answer.get("id"):
            raise ProxyError(
                f"The upstream '{upstream.name}' answered without a job id.",
                code="upstream_bad_answer",
                status=502,
                headers={"x-should-retry": "false"},
            )
        return job_from_object(answer)

    def read_poll(self, upstream: Upstream, status: int, body: bytes) -> JobState | None:
        """A failed job is answered 500 or 400 with the job as the body: a terminal
        ``failed``, not a transport error."""
        if 200 <= status < 300:
            return self.read_job(upstream, status, body)
        answer = parse_object(body)
        if answer is not None and answer.get("status") == "failed" and answer.get("id"):
            return job_from_object(answer)
        return None

    def content_source(
        self, upstream: Upstream, handle: Mapping[str, Any], variant: str
    ) -> ContentSource | None:
        """The MP4 only: its ``/content`` ignores ``variant`` and would answer the video."""
        if variant != "video":
            return None
        return ContentSource(path=f"/videos/{handle['id']}/content")

    def read_error(self, upstream: Upstream, status: int, body: bytes) -> ProxyError | None:
        """vLLM's ``{"error": {…, "code": <int>}}`` (or ``{"error": "Unauthorized"}``)."""
        return error_from_body(status, body)
