"""The console's JSON endpoints in the OpenAPI document (merged by gateway/openapi.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.console.views import Overview
from ops.trace import TxTrace


def paths(json_error: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas). Both answer 404 when MONOKERA_CONSOLE is off."""
    (overview, trace), components = msgspec.json.schema_components(
        [Overview, TxTrace], ref_template="#/components/schemas/{name}"
    )
    return {
        "/console/api/overview": {
            "get": {
                "operationId": "consoleOverview",
                "summary": "The console's live figures: this worker's counters, backlog per shard",
                "responses": {
                    "200": {
                        "description": "Figures and the last minutes, one point a second",
                        "content": {"application/json": {"schema": overview}},
                    }
                },
            }
        },
        "/console/api/trace": {
            "get": {
                "operationId": "consoleTrace",
                "summary": "One purchase through Redis and PostgreSQL, as `make trace` prints it",
                "parameters": [
                    {
                        "name": "tx",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "Found",
                        "content": {"application/json": {"schema": trace}},
                    },
                    "404": {"description": "No trace of it anywhere", "content": json_error},
                    "422": {"description": "tx missing", "content": json_error},
                    "503": {
                        "description": "Storage unavailable",
                        "content": json_error,
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    },
                },
            }
        },
    }, components
