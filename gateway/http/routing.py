"""Routes as data, and the router that dispatches by them: exact paths by dict lookup (the
hot path), then a few with one parameter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

from gateway.http.asgi import Receive, Scope
from gateway.http.errors import ErrorBody
from gateway.http.responses import Response


class ResponseSpec(NamedTuple):
    """One answer a route documents: its description, body and headers."""

    description: str
    body: Any = ErrorBody
    """A msgspec type (JSON), a media type such as "text/html", a JSON schema dict taken as
    is (components referenced by name), or None for no body."""
    headers: tuple[str, ...] = ()
    """Names from ``gateway.api.openapi.HEADERS``."""


class Route(NamedTuple):
    method: str
    path: str
    operation: str
    """The OpenAPI operationId."""
    handler: str
    """Which handler answers: a key of the mapping the services build (gateway/services.py)."""
    summary: str
    responses: Mapping[int, ResponseSpec]
    params: type | None = None
    body: Any = None
    """The request body's type; a ``list[T]`` is a batch, each item answered on its own."""
    description: str = ""
    documented: bool = True
    """False only for an alias whose path differs by a trailing slash: OpenAPI tools take
    those for the same path."""


Handler = Callable[[Scope, Receive], Awaitable[Response]]
Methods = dict[str, Handler]

# (first segment, number of segments, last segment or None) -> parameter name
Pattern = tuple[str, int, str | None]


class Router:
    def __init__(self, routes: Iterable[Route] = (), handlers: Mapping[str, Handler] = {}) -> None:
        """Each route answered by ``handlers[route.handler]`` (a KeyError if one is missing:
        a route the table lists must be served)."""
        self.exact: dict[str, tuple[str, Methods]] = {}
        self.patterns: dict[Pattern, tuple[str, str, Methods]] = {}
        for route in routes:
            self._methods(route.path)[route.method] = handlers[route.handler]

    def _methods(self, path: str) -> Methods:
        """``/a/{name}`` or ``/a/{name}/b``: one parameter, in the second segment."""
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[1].startswith("{"):
            tail = parts[2] if len(parts) == 3 else None
            found = self.patterns.setdefault(
                (parts[0], len(parts), tail), (path, parts[1].strip("{}"), {})
            )
            return found[2]
        return self.exact.setdefault(path, (path, {}))[1]

    def match(self, scope: Scope) -> tuple[str, Methods] | None:
        """The route's label (its pattern, for metrics) and its handlers by method."""
        exact = self.exact.get(scope["path"])
        if exact is not None:
            return exact
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        parts = raw.split(b"?", 1)[0].strip(b"/").split(b"/")
        if len(parts) not in (2, 3) or not parts[1]:
            return None
        tail = parts[2].decode("latin-1") if len(parts) == 3 else None
        found = self.patterns.get((parts[0].decode("latin-1"), len(parts), tail))
        if found is None:
            return None
        route, name, methods = found
        # Segments are split before decoding, so an encoded "/" stays inside its parameter.
        scope["path_params"] = {name: unquote_to_bytes(parts[1]).decode("utf-8", "replace")}
        return route, methods
