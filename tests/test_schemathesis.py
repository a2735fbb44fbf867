"""Schemathesis against /openapi.json: generated valid and invalid requests, real server.

Driven through Hypothesis directly: schemathesis's pytest plugin does not run under pytest 9.
"""

from __future__ import annotations

import itertools

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import Gateway

PARAMETERLESS = {"GET /healthz", "GET /readyz", "GET /console/api/overview"}

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
BATCH_CHECKS = [c for c in CHECKS if c is not negative_data_rejection]


def test_generated_requests_never_get_a_5xx_and_match_the_document(gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /purchase", "GET /readyz"}
    sent: dict[str, set[int]] = {}
    for operation, mode in itertools.product(operations, list(schemathesis.GenerationMode)):
        if mode is schemathesis.GenerationMode.NEGATIVE and operation.label in PARAMETERLESS:
            continue  # nothing to get wrong in a GET without parameters

        @settings(
            max_examples=100,
            derandomize=True,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            # A batch answers 200 with an error object for each bad item, by design: a
            # batch holding invalid items is not rejected whole.
            batch = case.operation.label == "POST /purchases"
            response = case.call_and_validate(checks=BATCH_CHECKS if batch else CHECKS)
            sent.setdefault(case.operation.label, set()).add(response.status_code)

        check()
    # Both kinds were exercised: accepted purchases, and rejected ones with their 4xx.
    assert 200 in sent["POST /purchase"]
    assert sent["POST /purchase"] & {400, 415, 422}
