"""Domain refusals become 503s in one place, each with its wire code and Retry-After."""

from __future__ import annotations

import msgspec
import pytest

from gateway.api.errors import (
    NOT_REPLICATED,
    STORE_UNAVAILABLE,
    ErrorResponses,
    InvalidQuery,
)
from gateway.http.responses import json_response
from gateway.refusals import (
    HistoryUnavailable,
    NotReplicated,
    Overloaded,
    StoreUnavailable,
    Unavailable,
)


@pytest.mark.parametrize(
    ("refusal", "code", "message"),
    [
        (StoreUnavailable("MOVED 1234 10.0.3.17:6379"), "store_unavailable", STORE_UNAVAILABLE),
        (NotReplicated("0 of 1 replicas"), "store_unavailable", NOT_REPLICATED),
        (HistoryUnavailable("history store unavailable: OSError"), "history_unavailable", None),
        (Overloaded("backlog 31 s old"), "overloaded", None),
        (Unavailable("draining"), "service_unavailable", None),
    ],
)
def test_each_refusal_is_a_503_with_its_code_and_retry_after(
    refusal: Unavailable, code: str, message: str | None
) -> None:
    answer = ErrorResponses(retry_after_s=7).response(refusal)
    body = msgspec.json.decode(answer.body)
    assert answer.status == 503
    assert (b"retry-after", b"7") in answer.headers
    assert body == {"error": code, "message": message or refusal.message, "details": []}


def test_a_refusal_subclass_takes_its_nearest_ancestor_code() -> None:
    class ShardDown(StoreUnavailable):
        pass

    body = msgspec.json.decode(ErrorResponses().response(ShardDown("x")).body)
    assert body["error"] == "store_unavailable" and body["message"] == STORE_UNAVAILABLE


def test_http_errors_keep_their_own_status_and_no_retry_after() -> None:
    answer = ErrorResponses().response(InvalidQuery("invalid parameter: limit"))
    assert answer.status == 422
    assert msgspec.json.decode(answer.body)["error"] == "validation_error"
    assert all(name != b"retry-after" for name, _ in answer.headers)


def test_a_503_a_handler_answered_itself_gets_retry_after_once() -> None:
    errors = ErrorResponses(retry_after_s=3)
    answered = errors.retry_later(json_response(503, b'{"status":"overloaded"}'))
    assert answered.headers.count((b"retry-after", b"3")) == 1
    assert errors.retry_later(answered).headers.count((b"retry-after", b"3")) == 1
