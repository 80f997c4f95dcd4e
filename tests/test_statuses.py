"""Every upstream status word the dialect contracts name becomes one of OpenAI's four."""

from __future__ import annotations

import pytest

from sora_proxy.dialects.statuses import (
    STATUS_WORDS,
    normalize_progress,
    normalize_status,
    normalize_timestamp,
)

OPENAI = {"queued", "in_progress", "completed", "failed"}

#: (contract, word, OpenAI status, error code): every word shared/dialects/ names.
CONTRACT_WORDS = [
    ("openai", "queued", "queued", None),
    ("openai", "in_progress", "in_progress", None),
    ("openai", "completed", "completed", None),
    ("openai", "failed", "failed", "upstream_error"),
    ("new-api", "unknown", "queued", None),
    ("new-api", "NOT_START", "queued", None),
    ("gateways §6", "pending", "queued", None),
    ("gateways §6", "submitted", "queued", None),
    ("gateways §6", "processing", "in_progress", None),
    ("gateways §6", "running", "in_progress", None),
    ("gateways §6", "succeeded", "completed", None),
    ("gateways §6", "success", "completed", None),
    ("gateways §6", "done", "completed", None),
    ("reseller", "cancelled", "failed", "cancelled"),
    ("reseller", "expired", "failed", "expired"),
    ("vllm-omni", "queued", "queued", None),
    ("vllm-omni", "in_progress", "in_progress", None),
    ("vllm-omni", "completed", "completed", None),
    ("vllm-omni", "failed", "failed", "upstream_error"),
    ("openrouter", "pending", "queued", None),
    ("openrouter", "cancelled", "failed", "cancelled"),
    ("openrouter", "expired", "failed", "expired"),
    ("xai", "pending", "queued", None),
    ("xai", "done", "completed", None),
    ("xai", "failed", "failed", "upstream_error"),
    ("xai", "expired", "failed", "expired"),
]


@pytest.mark.parametrize(("contract", "word", "status", "code"), CONTRACT_WORDS)
def test_every_contract_word_maps_to_one_of_the_four(contract, word, status, code):
    assert normalize_status(word) == (status, code)
    assert normalize_status(word.upper())[0] == status  # case does not matter


@pytest.mark.parametrize("word", [None, "", "   ", "warming_up", 3, ["queued"]])
def test_a_missing_or_unknown_word_is_queued_never_terminal(word):
    assert normalize_status(word) == ("queued", None)


def test_the_table_says_nothing_outside_the_four():
    assert {status for status, _ in STATUS_WORDS.values()} == OPENAI
    assert all((code is None) == (status != "failed") for status, code in STATUS_WORDS.values())


@pytest.mark.parametrize(
    ("value", "status", "expected"),
    [
        ("30%", "in_progress", 30),
        (" 45 % ", "in_progress", 45),
        (250, "in_progress", 100),
        (-3, "queued", 0),
        ("soon", "queued", 0),
        (None, "queued", 0),
        (0, "completed", 100),
        (True, "in_progress", 0),
        (12.7, "in_progress", 12),
    ],
)
def test_progress_is_an_int_from_0_to_100(value, status, expected):
    assert normalize_progress(value, status) == expected


def test_millisecond_timestamps_become_seconds():
    assert normalize_timestamp(1764347090922) == 1764347090
    assert normalize_timestamp(1764347090) == 1764347090
    assert normalize_timestamp("1764347090") is None
