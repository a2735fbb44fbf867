"""One Redis connection, auto-pipelined: commands are written the moment they are issued,
replies are matched to them in order.

The hot path (appends, cache reads) needs nothing of a client library but packing a
command and parsing a reply, and both are hiredis's C code. redis-py's asyncio pipeline
adds a connection pool checkout, a pipeline object, Python-level packing per argument and
a lock per round trip; on a 2-core box that shared overhead was a measurable part of each
purchase's CPU (see bench/history.md). Here a command costs one ``pack_command``, one
``transport.write`` and one future.

A connection that breaks or stops answering fails every command in flight with
``redis.exceptions.ConnectionError``/``TimeoutError`` (callers already map those to a 503
or, for the cache, to a PostgreSQL read) and the next command opens a new one. Nothing is
retried here: a re-sent append could run twice.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisReply = Any
Arg = bytes | str | int | float
"""bytes, int, None, a list of replies, or a ResponseError instance."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: deque[asyncio.Future[RedisReply]] = deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                waiter = self.waiters.popleft()
                if waiter.done():
                    continue  # its caller stopped waiting (timeout, cancellation)
                if isinstance(reply, ResponseError):
                    waiter.set_exception(_command_error(reply))
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:
            self.abort(RedisConnectionError(f"Redis protocol error: {exc!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(RedisConnectionError(f"connection to Redis lost: {exc!r}"))

    def send(self, commands: Sequence[tuple[Arg, ...]]) -> list[asyncio.Future[RedisReply]]:
        """Write the commands; a future per reply, resolved in order as replies arrive.

        Everything is packed before any future is queued: a command that cannot be packed
        (``TypeError``, e.g. a None argument) raises here with nothing of the batch sent
        and no future left in the queue, where it would take the next reply and shift
        every later reply on this connection to the wrong caller.
        """
        assert self.transport is not None
        packed = [_pack(cmd) for cmd in commands]
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self.waiters.extend(futures)
        self.transport.writelines(packed)
        return futures

    def abort(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._fail_all(exc)

    def _fail_all(self, exc: Exception) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


def _pack(command: tuple[Arg, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]  # stub: a 1-tuple
    return packed


def _command_error(reply: ResponseError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return reply


class RedisPipe:
    """``await pipe.call(b"GET", key)``; ``await pipe.call_many([...])`` for commands that
    must go out back to back (``EVALSHA`` then ``WAIT``)."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        self._options = parse_url(url)
        self._timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: Arg) -> RedisReply:
        return (await self.call_many([args]))[0]

    async def call_many(
        self, commands: Sequence[tuple[Arg, ...]], *, return_errors: bool = False
    ) -> list[RedisReply]:
        """Send the commands at once, in order; their replies in the same order. A command
        Redis refuses raises its ``ResponseError`` once all replies are in, or with
        ``return_errors`` stands in the list in place of its reply. A lost connection or
        a timeout raises either way. An argument that cannot be packed raises
        ``TypeError`` before any of the commands is sent."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        futures = protocol.send(commands)
        last = futures[-1]
        timer = asyncio.get_running_loop().call_later(
            self._timeout_s, _expire, protocol, last, self._timeout_s
        )
        try:
            await last  # replies come in order: when the last is in, all are
        except Exception:
            pass  # raised below, with the others
        finally:
            timer.cancel()
        replies: list[RedisReply] = []
        for future in futures:
            error = future.exception()
            if error is None:
                replies.append(future.result())
            elif return_errors and isinstance(error, ResponseError):
                replies.append(error)
            else:
                for other in futures:
                    other.exception()  # retrieved: asyncio need not warn about them
                raise error
        return replies

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            try:
                protocol = await asyncio.wait_for(self._open(), self._timeout_s)
            except (OSError, TimeoutError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Python 3.11's wait_for, cancelled as the connect fails, raises the
                    # failure instead: a caller that retries on errors would never stop.
                    raise asyncio.CancelledError from exc
                raise RedisConnectionError(f"cannot connect to Redis: {exc!r}") from exc
            self._protocol = protocol
            return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self._options
        transport: asyncio.BaseTransport
        if "path" in options:
            transport, protocol = await loop.create_unix_connection(_Protocol, options["path"])
        else:
            context = ssl.create_default_context() if _is_tls(options) else None
            transport, protocol = await loop.create_connection(
                _Protocol, options.get("host", "localhost"), options.get("port", 6379), ssl=context
            )
        handshake: list[tuple[Arg, ...]] = []
        if options.get("password") is not None:
            user = options.get("username")
            handshake.append(
                ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            )
        if int(options.get("db", 0) or 0):
            handshake.append(("SELECT", int(options["db"])))
        if handshake:
            try:
                for future in protocol.send(handshake):
                    await future
            except BaseException:
                transport.close()
                raise
        return protocol

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


def _expire(protocol: _Protocol, last: asyncio.Future[RedisReply], timeout_s: float) -> None:
    """No reply in time: the connection's order can no longer be trusted, so drop it."""
    if not last.done():
        protocol.abort(RedisTimeoutError(f"no reply from Redis within {timeout_s} s"))


def _is_tls(options: Any) -> bool:
    connection_class = options.get("connection_class")
    return connection_class is not None and "SSL" in connection_class.__name__
