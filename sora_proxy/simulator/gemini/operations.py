"""Veo's long-running operations on the simulator's clock.

An operation is running (no ``done``) for three steps of ``seconds_per_step``, then ``done``
with its outcome, decided at create from the prompt's markers: samples (one per
``sampleCount``, each a file the download route serves), an ``error`` with a gRPC code (after
two steps), or no samples and ``raiMediaFilteredCount`` (a safety filter).
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from ..views import FAIL_MARKER

#: A prompt holding this ends ``done`` with no samples and ``raiMediaFilteredCount: 1``.
MODERATE_MARKER = "[sim:moderate]"
#: A prompt holding this is refused at create with 429 ``RESOURCE_EXHAUSTED``.
RATE_LIMIT_MARKER = "[sim:429]"
#: The delay the 429's ``RetryInfo`` asks for.
RETRY_DELAY_SECONDS = 7
#: Where Google's generated files live; the URI a sample names (the SDK keeps only its id).
FILE_URI = "https://generativelanguage.googleapis.com/v1beta/files/{id}:download?alt=media"
#: The failed operation's ``error``: gRPC 13 (INTERNAL), not an HTTP status.
FAILURE = {"code": 13, "message": "Video generation failed due to an internal error."}
FILTERED_REASON = (
    "We encountered an issue with the audio for your prompt. "
    "You have not been charged. Please try a different prompt."
)
_RESPONSE_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
)

Outcome = Literal["samples", "failed", "filtered"]


def outcome_for(prompt: str) -> Outcome:
    """How an operation with this prompt ends."""
    if FAIL_MARKER in prompt:
        return "failed"
    if MODERATE_MARKER in prompt:
        return "filtered"
    return "samples"


def new_operation(model: str, prompt: str, sample_count: int) -> dict[str, Any]:
    """A stored operation, kept under its ``id`` (= its name); ``_``-keys are the simulator's
    own (clock, outcome, file ids)."""
    name = f"models/{model}/operations/{secrets.token_hex(6)}"
    return {
        "id": name,
        "name": name,
        "_started": time.time(),
        "_outcome": outcome_for(prompt),
        "_files": [secrets.token_hex(6) for _ in range(sample_count)],
    }


def render(operation: dict[str, Any], seconds_per_step: float) -> dict[str, Any]:
    """The ``google.longrunning.Operation`` JSON as of now."""
    elapsed = time.time() - operation["_started"]
    steps = elapsed / seconds_per_step if seconds_per_step > 0 else float("inf")
    answer: dict[str, Any] = {"name": operation["name"]}
    outcome: Outcome = operation["_outcome"]
    if outcome == "failed" and steps >= 2:
        answer.update(done=True, error=dict(FAILURE))
    elif steps >= 3:
        answer["done"] = True
        if outcome == "filtered":
            generated: dict[str, Any] = {
                "raiMediaFilteredCount": 1,
                "raiMediaFilteredReasons": [FILTERED_REASON],
            }
        else:
            samples = [{"video": {"uri": FILE_URI.format(id=f)}} for f in operation["_files"]]
            generated = {"generatedSamples": samples}
        answer["response"] = {"@type": _RESPONSE_TYPE, "generateVideoResponse": generated}
    return answer


def is_finished(operation: dict[str, Any], seconds_per_step: float) -> bool:
    """Whether its files are ready to download."""
    rendered = render(operation, seconds_per_step)
    return rendered.get("done") is True and "error" not in rendered
