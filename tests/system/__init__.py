"""The gateway and flushers as processes over HTTP: the API end to end, faults with real
signals, `make run`'s supervisor, Redis Cluster, the console in a real browser."""
