"""Operator tools: read Redis and PostgreSQL, change nothing, say what they find.

``python -m ops.trace`` follows one purchase end to end or shows the streams (``make
trace``, ``make stream``); ``python -m ops.reconcile`` checks that the streams, their
consumer groups and PostgreSQL add up (``make reconcile``). They import ``core`` only:
the gateway's console serves the same trace without loading the flusher, and the tools
run wherever the settings reach Redis and PostgreSQL.
"""
