"""Redis I/O for the hot path: one auto-pipelined connection per node, which node serves a
key (one server or a cluster), and what is prepared in Redis at start. Imports nothing
else of the gateway."""
