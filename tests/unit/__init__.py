"""Nothing running: pure functions, the router, the error map, the layering. `make test-unit`
runs these in seconds."""
