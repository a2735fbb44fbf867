"""The OpenAPI 3.1 document, generated from the route table and the msgspec types.

Nothing here restates what the tables (gateway/api/routes.py, gateway/console/routes.py), the types or the settings
already say: paths and operations come from the routes the router serves, schemas and
parameters from the types the handlers decode with, the batch size from the settings. So
the document cannot drift from what the server accepts. Built once at startup; served as
bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, get_args, get_origin

import msgspec

from core.events import PurchaseRequest
from core.settings import Settings
from gateway.http.routing import ResponseSpec, Route

REF: Final = "#/components/schemas/{name}"

SEED_EXAMPLE: Final = {
    "transaction_id": "312312312312",
    "customer_info": {
        "customer_name": "User 1",
        "customer_account": "23131342342342321",
        "ammount": 20000,
    },
    "seller_info": {"seller_name": "User 2", "seller_account": "23132131"},
}
_EXAMPLES: Final[dict[Any, Any]] = {PurchaseRequest: SEED_EXAMPLE}

HEADERS: Final = {
    "Retry-After": {"type": "integer"},
    "X-Request-ID": {"type": "string"},
    "X-Stream-Entry-ID": {"type": "string"},
    "Idempotent-Replayed": {"type": "string", "enum": ["true"]},
    "ETag": {"type": "string"},
}


def build(served: Iterable[Route], settings: Settings) -> dict[str, Any]:
    routes = [route for route in served if route.documented]
    types = _types(routes)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, schema_of, components, settings
        )
    for route in routes:  # published as parameters, not as schemas
        if route.params is not None:
            components.pop(route.params.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Monokera purchase gateway",
            "version": "1",
            "description": "Wire-compatible with the original POST /purchase.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }


def _types(routes: list[Route]) -> list[Any]:
    """Every msgspec type the routes name, once each, in table order."""
    found: list[Any] = []
    for route in routes:
        for kind in (route.params, _item(route.body), *(r.body for r in route.responses.values())):
            if isinstance(kind, type) and kind not in found:
                found.append(kind)
    return found


def _item(body: Any) -> Any:
    return get_args(body)[0] if get_origin(body) is list else body


def _operation(
    route: Route, schema_of: dict[Any, Any], components: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation, "summary": route.summary}
    if route.description:
        operation["description"] = route.description.format(
            idempotency_ttl_s=settings.idempotency_ttl_s
        )
    if route.params is not None:
        operation["parameters"] = _parameters(route, components)
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": _request(route.body, schema_of, settings),
        }
    operation["responses"] = {
        str(status): _response(reply, schema_of)
        for status, reply in sorted(route.responses.items())
    }
    return operation


def _parameters(route: Route, components: dict[str, Any]) -> list[dict[str, Any]]:
    """One per field of the route's params Struct: in the path if the path names it."""
    assert route.params is not None
    struct = components[route.params.__name__]
    required = set(struct.get("required", ()))
    return [
        {
            "name": name,
            "in": "path" if f"{{{name}}}" in route.path else "query",
            "required": name in required,
            "schema": schema,
        }
        for name, schema in struct["properties"].items()
    ]


def _request(body: Any, schema_of: dict[Any, Any], settings: Settings) -> dict[str, Any]:
    item = _item(body)
    example = _EXAMPLES.get(item)
    if item is body:
        content: dict[str, Any] = {"schema": schema_of[body]}
        if example is not None:
            content["example"] = example
        return {"application/json": content}
    # A batch: any JSON value is taken as an item and answered on its own, so the schema
    # must not promise to refuse one that is not a valid item.
    batch = {
        "type": "array",
        "items": {
            "description": f"Meant to be a {item.__name__}; any value is taken and answered on its own",
            "anyOf": [schema_of[item], {}],
        },
        "minItems": 1,
        "maxItems": settings.max_batch_items,
    }
    return {"application/json": {"schema": batch, "example": [example] if example else []}}


def _response(reply: ResponseSpec, schema_of: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.headers:
        out["headers"] = {name: {"schema": HEADERS[name]} for name in reply.headers}
    if isinstance(reply.body, str):
        out["content"] = {reply.body: {"schema": {"type": "string"}}}
    elif isinstance(reply.body, dict):
        out["content"] = {"application/json": {"schema": _resolve(reply.body)}}
    elif reply.body is not None:
        out["content"] = {"application/json": {"schema": schema_of[reply.body]}}
    return out


def _resolve(schema: Any) -> Any:
    """A schema written in the table, its ``$ref`` names made component references."""
    if isinstance(schema, dict):
        return {
            key: REF.format(name=value) if key == "$ref" else _resolve(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_resolve(value) for value in schema]
    return schema


def document(served: Iterable[Route], settings: Settings) -> bytes:
    return msgspec.json.encode(build(served, settings))
