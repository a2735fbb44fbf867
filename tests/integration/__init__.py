"""Real Redis and PostgreSQL, started by the suite (tests/conftest.py); the code under test runs
in the test's own process: the appender, the pipe, the ledger writer, partitions, the reader."""
