"""The console's routes: its page, and the JSON the page reads. Served (and documented)
only with ``MONOKERA_CONSOLE`` on; the gateway serves the union of these and the
service's (``gateway.services.served_routes``)."""

from __future__ import annotations

from typing import Final

from gateway.api.routes import STORAGE_UNAVAILABLE
from gateway.console.schemas import Overview, TraceQuery
from gateway.http.routing import ResponseSpec, Route
from ops.trace import TxTrace


def _asset(path: str, file: str, media: str, summary: str, documented: bool = True) -> Route:
    return Route(
        "GET",
        path,
        "console" + file.replace(".", " ").title().replace(" ", ""),  # consoleIndexHtml
        file,
        summary,
        {
            200: ResponseSpec("The file", media, ("ETag",)),
            304: ResponseSpec("Unchanged since the ETag in If-None-Match", None, ("ETag",)),
        },
        documented=documented,
    )


ROUTES: Final = (
    _asset("/console", "index.html", "text/html", "The operations page"),
    _asset("/console/", "index.html", "text/html", "The operations page", documented=False),
    _asset("/console/console.css", "console.css", "text/css", "The page's style sheet"),
    _asset("/console/console.js", "console.js", "text/javascript", "The page's script"),
    Route(
        "GET",
        "/console/api/overview",
        "consoleOverview",
        "consoleOverview",
        "The console's live figures: this worker's counters, backlog per shard",
        {200: ResponseSpec("Figures and the last minutes, one point a second", Overview)},
    ),
    Route(
        "GET",
        "/console/api/trace",
        "consoleTrace",
        "consoleTrace",
        "One purchase through Redis and PostgreSQL, as `make trace` prints it",
        {
            200: ResponseSpec("Found", TxTrace),
            404: ResponseSpec("No trace of it anywhere"),
            422: ResponseSpec("tx missing"),
            503: STORAGE_UNAVAILABLE,
        },
        params=TraceQuery,
    ),
)
