"""Embedded Redis and PostgreSQL from PyPI wheels, for `make run` and the test suite."""
