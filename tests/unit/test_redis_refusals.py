"""Redis refusals that pass by themselves (out of memory, a failover, a script running) are told from the ones that do not, so the flusher waits for the first and fails on the second."""

from __future__ import annotations


def test_redis_refusals_that_pass_are_told_from_the_ones_that_do_not() -> None:
    from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

    from flusher.errors import is_transient

    for error in (
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("BUSY Redis is busy running a script."),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError(  # Redis 6.2 wraps an error inside a script
            "Error running script (call to f_0): @user_script:1: @user_script: 1:"
            " -OOM command not allowed when used memory > 'maxmemory'."
        ),
    ):
        assert is_transient(error), error
    for error in (
        ResponseError("BUSYGROUP Consumer Group name already exists"),
        ResponseError("NOGROUP No such key 'x' or consumer group 'y'"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ):
        assert not is_transient(error), error
