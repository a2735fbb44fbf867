"""The wire contract: the route table, the OpenAPI document drawn from it, the typed path
and query parameters, the response schemas, and the one place errors become statuses
(``gateway.api.errors``). Built on ``gateway.http`` alone."""
