"""The HTTP edge: a framework-free ASGI app that turns purchases into Redis stream entries."""
