"""The route table, the router that dispatches by it and the document that describes it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from core.settings import Settings
from gateway.api import openapi
from gateway.http.asgi import Receive, Scope
from gateway.http.responses import Response, json_response
from gateway.http.routing import Handler, ResponseSpec, Route, Router
from gateway.services import served_routes


def answering(name: str) -> Handler:
    async def handler(scope: Scope, receive: Receive) -> Response:
        return json_response(200, name.encode())

    return handler


def scope(path: str, raw_path: bytes | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "raw_path": raw_path}


TABLE = [
    Route("GET", "/healthz", "healthz", "healthz", "", {200: ResponseSpec("ok")}),
    Route("POST", "/healthz", "poke", "poke", "", {200: ResponseSpec("ok")}),
    Route("GET", "/accounts/{account}", "summary", "summary", "", {200: ResponseSpec("ok")}),
    Route(
        "GET",
        "/accounts/{account}/transactions",
        "history",
        "history",
        "",
        {200: ResponseSpec("ok")},
    ),
]
HANDLERS = {name: answering(name) for name in ("healthz", "poke", "summary", "history")}


def test_exact_paths_match_with_every_method_of_the_route() -> None:
    router = Router(TABLE, HANDLERS)
    matched = router.match(scope("/healthz"))
    assert matched is not None
    label, methods = matched
    assert label == "/healthz"
    assert methods == {"GET": HANDLERS["healthz"], "POST": HANDLERS["poke"]}


def test_a_parameter_is_taken_from_the_raw_path_and_decoded_whole() -> None:
    router = Router(TABLE, HANDLERS)
    found = scope("/accounts/a/b/transactions", b"/accounts/a%2Fb/transactions?limit=5")
    matched = router.match(found)
    assert matched is not None
    assert matched[0] == "/accounts/{account}/transactions"
    assert matched[1]["GET"] is HANDLERS["history"]
    assert found["path_params"] == {"account": "a/b"}
    summary = scope("/accounts/caf%C3%A9", b"/accounts/caf%C3%A9")
    assert Router(TABLE, HANDLERS).match(summary) is not None
    assert summary["path_params"] == {"account": "café"}


def test_unknown_paths_and_shapes_do_not_match() -> None:
    router = Router(TABLE, HANDLERS)
    for path in ("/nope", "/accounts", "/accounts/", "/accounts/x/other", "/accounts/x/y/z"):
        assert router.match(scope(path)) is None, path


def test_a_route_without_its_handler_is_refused_at_start() -> None:
    with pytest.raises(KeyError):
        Router(TABLE, {"healthz": HANDLERS["healthz"]})


def test_every_route_served_is_in_the_document_and_nothing_else() -> None:
    for console in (True, False):
        settings = Settings(console=console)
        document: Any = msgspec.json.decode(openapi.document(served_routes(settings), settings))
        documented = {
            (method.upper(), path)
            for path, methods in document["paths"].items()
            for method in methods
        }
        routes = served_routes(settings)
        assert documented == {(r.method, r.path) for r in routes if r.documented}
        assert ("GET", "/metrics") in documented and ("GET", "/openapi.json") in documented
        assert (("GET", "/console/api/trace") in documented) is console
        operations = [r.operation for r in routes if r.documented]
        assert len(operations) == len(set(operations))


def test_the_document_states_the_limits_the_server_applies() -> None:
    settings = Settings(max_batch_items=7)
    document: Any = msgspec.json.decode(openapi.document(served_routes(settings), settings))
    batch = document["paths"]["/purchases"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["maxItems"] == 7
    parameters = document["paths"]["/accounts/{account}/transactions"]["get"]["parameters"]
    account = next(p for p in parameters if p["name"] == "account")
    assert account["in"] == "path" and account["required"] is True
    assert account["schema"]["maxLength"] == 64
    limit = next(p for p in parameters if p["name"] == "limit")
    assert limit["in"] == "query" and limit["required"] is False
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
