"""The HTTP edge: a framework-free ASGI app that turns purchases into Redis stream entries.

Grouped by role (docs/architecture.md; tests/unit/test_layering.py holds each room
to the ones below it):

- ``http/``: the HTTP machinery (ASGI types, Route and Router, responses, HTTP errors,
  body reading, deadlines, request ids);
- ``api/``: the wire contract (route table, OpenAPI, params, schemas, errors to answers);
- ``ingest/``: the purchase path (handler, appender and its Lua script, backpressure);
- ``reads/``: the read routes (handlers, their SQL and reader, the read cache);
- ``redis_io/``: Redis connections for the hot path; ``telemetry/``: counters, heartbeat;
- ``status/``: probes, /metrics, the shard watch; ``console/``: the operations page;
- ``refusals.py``: what the parts refuse with; ``app.py``, ``services.py``,
  ``__main__.py``: the assembly.
"""
