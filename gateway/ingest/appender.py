"""Coalesced, idempotent appends to the purchase streams.

Every request that asks to append during one event-loop turn joins the same batch; the
batch goes to Redis as one script call (``append.lua``) per stream shard, all of a node's
shards in one pipelined round trip, and each request gets its own future back. While
``max_inflight`` round trips are already waiting on Redis, new appends keep joining the
next batch, which is sent as soon as one returns: under load the batches grow instead of
the round trips multiplying.

The script checks each purchase's idempotency record and appends it in the same atomic
step, so concurrent retries of one transaction_id produce exactly one stream entry. A
purchase's shard is a stable hash of its transaction_id, and its idempotency bucket (and
943f4b2's per-purchase key, still honoured after an upgrade) shares the shard
stream's hash tag, so the script stays atomic on a Redis Cluster too.

With ``ack_replicas`` each round trip ends with ``WAIT``, which waits for this connection's
own last write. A replay found the purchase written earlier, perhaps by another connection
or gateway; so that its ``WAIT`` covers that entry too, the script then writes on replays
as well (it sets the record's bucket's expiry again, to the same instant).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib.resources import files
from typing import Final, NamedTuple, cast

from redis.exceptions import NoScriptError, RedisError

from core.constants import idempotency_bucket_prefix, idempotency_key, shard_of, stream_key
from core.entries import FIELDS, SCRIPT_HEADER, Values
from core.idempotency import REACH, Appended, Outcome, bucket_width_s, outcome
from core.logs import Sparse
from core.redis_clients import REDIS_UNAVAILABLE
from gateway.redis_io.nodes import Nodes
from gateway.redis_io.pipe import Arg, RedisPipe, RedisReply
from gateway.refusals import NotReplicated, Overloaded, StoreUnavailable
from gateway.telemetry.counters import BATCH_BUCKETS, Histogram

APPEND_SCRIPT: Final = (files("gateway.ingest") / "append.lua").read_bytes()
APPEND_SHA: Final = hashlib.sha1(APPEND_SCRIPT).hexdigest()
ACCEPTED: Final = Outcome.ACCEPTED
STRIDE: Final = 1 + len(FIELDS)
"""Script arguments per purchase: its fingerprint, then its entry values."""

log = logging.getLogger("gateway.ingest.appender")


class Pending(NamedTuple):
    """One purchase waiting for its round trip (a tuple: one is built per purchase)."""

    key: bytes
    """Its legacy idempotency key; empty when those are no longer honoured."""
    fingerprint: bytes
    values: Values
    """The entry's values (core.entries.values)."""
    future: asyncio.Future[Appended]


class Bulk:
    """The purchases of one ``append_many`` call: one future for all of them, resolved once
    every shard's part has its reply (or failed at the first part that failed)."""

    __slots__ = ("future", "left", "results")

    def __init__(self, future: asyncio.Future[None], size: int, parts: int) -> None:
        self.future = future
        self.results: list[Appended | None] = [None] * size
        self.left = parts

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class Part(NamedTuple):
    """The purchases of a Bulk that fall in one shard, joining that shard's script call as
    one unit: keys and arguments laid out already, results written back by position."""

    bulk: Bulk
    positions: list[int]
    keys: list[bytes]
    """Their legacy idempotency keys, in order (none when those are no longer honoured)."""
    args: list[Arg]
    """fingerprint, values..., fingerprint, values..., in the order of ``positions``."""


Unit = Pending | Part


class AppendStats:
    __slots__ = ("appends", "failed", "replays", "round_trips")

    def __init__(self) -> None:
        self.appends = 0
        self.replays = 0
        self.round_trips = 0
        self.failed = 0


class StreamAppender:
    def __init__(
        self,
        nodes: Nodes,
        *,
        shards: int = 1,
        idempotency_ttl_s: int = 900,
        idempotency_legacy_keys: bool = True,
        max_inflight: int = 4,
        max_pending: int = 10_000,
        ack_replicas: int = 0,
        ack_replicas_timeout_ms: int = 100,
        batch_sizes: Histogram | None = None,
    ) -> None:
        self._nodes = nodes
        self._shards = shards
        self._streams = [stream_key(shard).encode() for shard in range(shards)]
        self._idempotency = (
            b"%d" % idempotency_ttl_s,
            b"%d" % bucket_width_s(idempotency_ttl_s),
            b"%d" % REACH,
        )
        self._bucket_prefixes = [idempotency_bucket_prefix(shard) for shard in range(shards)]
        self._legacy_keys = idempotency_legacy_keys
        """Name each purchase's legacy key to the script and have it read them (else none:
        fewer bytes to parse, no MGET)."""
        self._max_inflight = max_inflight
        self._max_pending = max_pending
        self._ack_replicas = ack_replicas
        self._ack_replicas_timeout_ms = ack_replicas_timeout_ms
        # A replay must write something for WAIT to cover the original entry (append.lua).
        self._replay_writes = b"1" if ack_replicas else b"0"
        self._batches: list[list[Unit]] = [[] for _ in range(shards)]
        self._waiting = 0
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = AppendStats()
        self._failures = Sparse(log)
        self._batch_sizes = batch_sizes or Histogram(BATCH_BUCKETS)

    @property
    def legacy_keys(self) -> bool:
        """Whether each purchase's 943f4b2 idempotency key is still read (``legacy_keys``)."""
        return self._legacy_keys

    def forget_legacy_keys(self) -> None:
        """No 943f4b2 key is left (``gateway.ingest.legacy_keys``): stop naming and reading
        them. Purchases already queued with their key still decide correctly."""
        self._legacy_keys = False

    async def load_script(self) -> None:
        """Warm the script cache of every known node (a node without it is loaded lazily)."""
        for pipe in self._nodes.all():
            await pipe.call(b"SCRIPT", b"LOAD", APPEND_SCRIPT)

    async def append(self, transaction_id: str, fingerprint: bytes, values: Values) -> Appended:
        """Append one purchase unless its transaction_id is known; once Redis confirmed it,
        the outcome: accepted, replayed (same fingerprint as the first time) or conflict."""
        if self._waiting >= self._max_pending:
            raise Overloaded(f"{self._waiting} purchases already waiting for Redis")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Appended] = loop.create_future()
        shard = shard_of(transaction_id, self._shards)
        key = idempotency_key(shard, transaction_id) if self._legacy_keys else b""
        self._batches[shard].append(Pending(key, fingerprint, values, future))
        self._waiting += 1
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    async def append_many(self, purchases: list[tuple[str, bytes, Values]]) -> list[Appended]:
        """Append many purchases (transaction_id, fingerprint, values), each unless its
        transaction_id is known, in order; once Redis confirmed every one of them.

        One future for the whole list, and per shard one unit in that shard's next script
        call, instead of a future and a Pending per purchase. A purchase later in the list
        with the transaction_id of an earlier one is a replay of it (the script runs them
        in order). Refused whole (Overloaded) when it does not fit beside what already
        waits; alone it is always taken, however large (``max_batch_items`` bounds it).
        If any shard's call fails the whole list is refused (StoreUnavailable: none of it acknowledged,
        and a retry of all of it is safe, each purchase being idempotent)."""
        if not purchases:
            return []
        if self._waiting and self._waiting + len(purchases) > self._max_pending:
            raise Overloaded(f"{self._waiting} purchases already waiting for Redis")
        loop = asyncio.get_running_loop()
        by_shard: dict[int, tuple[list[int], list[bytes], list[Arg]]] = {}
        shards = self._shards
        for position, (transaction_id, fingerprint, values) in enumerate(purchases):
            shard = shard_of(transaction_id, shards) if shards > 1 else 0
            part = by_shard.get(shard)
            if part is None:
                part = by_shard[shard] = ([], [], [])
            part[0].append(position)
            if self._legacy_keys:
                part[1].append(idempotency_key(shard, transaction_id))
            part[2].append(fingerprint)
            part[2].extend(values)
        future: asyncio.Future[None] = loop.create_future()
        bulk = Bulk(future, len(purchases), len(by_shard))
        for shard, (positions, keys, args) in by_shard.items():
            self._batches[shard].append(Part(bulk, positions, keys, args))
        self._waiting += len(purchases)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        await future
        return cast(list[Appended], bulk.results)

    def _dispatch(self) -> None:
        self._scheduled = False
        if not self._waiting or self._inflight >= self._max_inflight:
            return  # a returning round trip dispatches what waits
        batches = {shard: items for shard, items in enumerate(self._batches) if items}
        self._batches = [[] for _ in range(self._shards)]
        self._waiting = 0
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._send(batches))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batches: dict[int, list[Unit]]) -> None:
        try:
            by_node: dict[RedisPipe, dict[int, list[Unit]]] = {}
            for shard, items in batches.items():
                try:
                    pipe = self._nodes.pipe_for(self._streams[shard])
                except REDIS_UNAVAILABLE as exc:
                    self._fail(items, exc)
                    continue
                by_node.setdefault(pipe, {})[shard] = items
            if len(by_node) == 1:
                [(pipe, node_batches)] = by_node.items()
                await self._send_to(pipe, node_batches)
            else:
                await asyncio.gather(*(self._send_to(p, b) for p, b in by_node.items()))
        finally:
            self._inflight -= 1
            if self._waiting and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._dispatch)

    async def _send_to(self, pipe: RedisPipe, batches: dict[int, list[Unit]]) -> None:
        """One round trip to one node: a script call per shard (then WAIT, if asked)."""
        try:
            replies = await self._call(pipe, batches)
        except REDIS_UNAVAILABLE as exc:
            self._nodes.failed(exc)
            for items in batches.values():
                self._fail(items, exc)
            return
        except BaseException as exc:
            # Cancelled at shutdown, or a bug: nobody may wait forever for an answer.
            for items in batches.values():
                self._fail(items, exc)
            raise
        self.stats.round_trips += 1
        for (shard, items), reply in zip(batches.items(), replies, strict=True):
            if isinstance(reply, RedisError):
                self._nodes.failed(reply)  # e.g. MOVED during a resharding or failover
                self._fail(items, reply, shard)
                continue
            self._batch_sizes.observe(len(reply))
            at = 0
            for item in items:
                if isinstance(item, Pending):
                    result = reply[at]
                    at += 1
                    if item.future.done():
                        continue  # the client went away; the purchase is appended all the same
                    item.future.set_result(self._judged(result, item.fingerprint))
                    continue
                results, args, bulk = item.bulk.results, item.args, item.bulk
                for j, position in enumerate(item.positions):
                    results[position] = self._judged(reply[at], cast(bytes, args[STRIDE * j]))
                    at += 1
                bulk.left -= 1
                if not bulk.left and not bulk.future.done():
                    bulk.future.set_result(None)

    def _judged(self, result: bytes, fingerprint: bytes) -> Appended:
        appended = outcome(result, fingerprint)
        if appended.outcome is ACCEPTED:
            self.stats.appends += 1
        else:
            self.stats.replays += 1
        return appended

    async def _call(self, pipe: RedisPipe, batches: dict[int, list[Unit]]) -> list[RedisReply]:
        """The script's reply per shard, or the error Redis gave for that shard."""
        commands: list[tuple[Arg, ...]] = []
        for shard, items in batches.items():
            keys: list[bytes] = [self._streams[shard]]
            window, width, reach = self._idempotency
            legacy_keys = self._legacy_keys
            legacy = b"1" if legacy_keys else b"0"
            prefix = self._bucket_prefixes[shard]
            args: list[Arg] = [window, self._replay_writes, width, reach, legacy, prefix]
            args += SCRIPT_HEADER
            for item in items:
                if isinstance(item, Pending):
                    if legacy_keys:
                        keys.append(item.key)
                    args.append(item.fingerprint)
                    args += item.values
                else:
                    keys += item.keys
                    args += item.args
            commands.append((b"EVALSHA", APPEND_SHA, len(keys), *keys, *args))
        if self._ack_replicas:
            commands.append((b"WAIT", self._ack_replicas, self._ack_replicas_timeout_ms))
        replies = await pipe.call_many(commands, return_errors=True)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # Redis restarted, failed over or flushed its scripts: nothing ran, so
            # running again is safe.
            await pipe.call(b"SCRIPT", b"LOAD", APPEND_SCRIPT)
            replies = await pipe.call_many(commands, return_errors=True)
        if self._ack_replicas:
            confirmed = replies.pop()
            if isinstance(confirmed, RedisError):
                raise confirmed
            if int(confirmed) < self._ack_replicas:
                raise ReplicationLag(f"{confirmed} of {self._ack_replicas} replicas confirmed")
        return replies

    def _fail(self, items: list[Unit], exc: BaseException, shard: int | None = None) -> None:
        """Each item is refused (StoreUnavailable, or NotReplicated); Redis's error text
        goes to the log, never to a client (gateway.api.errors answers a fixed text)."""
        where = "" if shard is None else f" (shard {shard})"
        self._failures.warning("append failed%s: %s: %s", where, type(exc).__name__, exc)
        refusal = NotReplicated if isinstance(exc, ReplicationLag) else StoreUnavailable
        for item in items:
            if isinstance(item, Pending):
                self.stats.failed += 1
                if not item.future.done():
                    item.future.set_exception(refusal())
            else:
                self.stats.failed += len(item.positions)
                item.bulk.fail(refusal())

    async def close(self) -> None:
        """Send what is queued, then wait for every round trip in flight."""
        while self._waiting or self._tasks:
            if self._waiting and self._inflight < self._max_inflight:
                self._dispatch()
            if self._tasks:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)


class ReplicationLag(RedisError):
    """Appended on the primary, but fewer replicas than required confirmed it in time."""
