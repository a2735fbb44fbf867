"""The HTTP machinery: ASGI types, the router, responses, the HTTP errors, reading a
request body under its limit and deadline, request ids. It knows HTTP and nothing of
purchases, Redis or PostgreSQL; nothing else of the gateway is imported here."""
