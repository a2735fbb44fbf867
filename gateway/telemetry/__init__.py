"""This worker's counters, the board where every worker publishes them for a scrape, and
the heartbeat `make run` watches. Imports nothing else of the gateway."""
