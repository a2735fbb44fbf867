"""A Redis Cluster of redis-server processes from a wheel, for tests and benchmarks.

Each node is a `RedisServer` with cluster mode switched on and its own folder. The cluster
is put together with plain commands (``CLUSTER ADDSLOTS``, ``MEET``, ``REPLICATE``), as
``redis-cli --cluster create`` does, because the Redis 8 wheel ships no redis-cli; the
same steps work on Redis 6.2. Everything is read back from the cluster itself
(``CLUSTER NODES``), because failover moves the roles around.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from devstack.processes import free_port, port_is_free, wait_until
from devstack.redis_server import DEFAULT_REDIS_VERSION, RedisServer, RedisVersion

SLOTS = 16384
BUS_PORT_OFFSET = 10000
"""Redis 6.2 has no ``cluster-port``: the cluster bus always listens on port + 10000."""


@dataclass(frozen=True)
class NodeView:
    """One line of ``CLUSTER NODES``, as the node asked sees the node described."""

    id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: int

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool({"fail", "fail?"} & self.flags)


@dataclass
class RedisCluster:
    """``masters_count`` masters with ``replicas_per_master`` replicas each, on free ports.

    ``node_timeout_ms`` is short (Redis' default is 15 s) so a killed master is failed over
    in about two seconds. Nodes keep their folders (AOF and nodes.conf) across ``restart``.
    """

    data_dir: Path
    masters_count: int = 3
    replicas_per_master: int = 1
    appendfsync: str = "everysec"
    node_timeout_ms: int = 1000
    version: RedisVersion = DEFAULT_REDIS_VERSION
    nodes: list[RedisServer] = field(init=False)
    _replicas_at_kill: dict[int, set[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        cluster_args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
        )  # fmt: skip
        count = self.masters_count * (1 + self.replicas_per_master)
        self.nodes = [
            RedisServer(
                self.data_dir / f"node-{i}",
                port,
                appendfsync=self.appendfsync,
                extra_args=cluster_args,
                version=self.version,
            )
            for i, port in enumerate(_cluster_ports(count))
        ]

    @property
    def seed_url(self) -> str:
        """A URL for cluster clients: the first node still running (db 0, the only one)."""
        return self._any_running().url

    def start(self, timeout: float = 30) -> None:
        """Start every node, assign slots and replicas, wait until the cluster is whole.

        The first ``masters_count`` nodes get equal slot ranges and distinct config epochs
        (so no epoch collision has to be resolved first); the others replicate them in turn.
        """
        for node in self.nodes:
            node.start()
        masters = self.nodes[: self.masters_count]
        for i, master in enumerate(masters):
            first, last = SLOTS * i // len(masters), SLOTS * (i + 1) // len(masters) - 1
            command(master, "CLUSTER", "ADDSLOTS", *(str(s) for s in range(first, last + 1)))
            command(master, "CLUSTER", "SET-CONFIG-EPOCH", str(i + 1))
        for node in self.nodes[1:]:
            command(self.nodes[0], "CLUSTER", "MEET", "127.0.0.1", str(node.port))
        wait_until(self._all_met, timeout, "cluster nodes meeting each other")
        for i, replica in enumerate(self.nodes[self.masters_count :]):
            master_id = command(masters[i % len(masters)], "CLUSTER", "MYID")
            command(replica, "CLUSTER", "REPLICATE", master_id)
        wait_until(self._all_replicas_known, timeout, "every node seeing every replica")
        self.wait_settled(timeout)

    def stop(self) -> None:
        """Stop every node that runs; safe to call more than once."""
        for node in self.nodes:
            node.stop()

    def view(self, node: RedisServer | None = None) -> list[NodeView]:
        """``CLUSTER NODES`` as seen by ``node``, or by the first node still running."""
        lines = command(node or self._any_running(), "CLUSTER", "NODES").splitlines()
        return [_parse_node_line(line) for line in lines]

    def masters(self) -> list[RedisServer]:
        """The nodes serving slots now, as the cluster sees them."""
        ports = {v.port for v in self.view() if v.is_master and v.slots and not v.failing}
        return [node for node in self.nodes if node.port in ports]

    def replicas_of(self, master: RedisServer) -> list[RedisServer]:
        views = self.view()
        master_id = next(v.id for v in views if v.port == master.port)
        ports = {v.port for v in views if v.master_id == master_id}
        return [node for node in self.nodes if node.port in ports]

    def master_for_key(self, key: str | bytes) -> RedisServer:
        return self.master_for_slot(int(command(self._any_running(), "CLUSTER", "KEYSLOT", key)))

    def master_for_slot(self, slot: int) -> RedisServer:
        for start, end, master, *_replicas in command(self._any_running(), "CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return self._node(int(master[1]))
        raise LookupError(f"no node serves slot {slot}")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL, no goodbye to the cluster; remembers the replicas that may take over."""
        if node.running:
            self._replicas_at_kill[node.port] = {r.port for r in self.replicas_of(node)}
        node.kill()

    def wait_for_failover(self, old_master: RedisServer, timeout: float = 10) -> RedisServer:
        """Wait until a replica of the killed ``old_master`` serves its slots and the cluster
        is ok again, as a surviving node sees it; returns the promoted replica."""
        candidates = self._replicas_at_kill.get(old_master.port, set())
        if not candidates:
            raise ValueError(f"node {old_master.port} had no replicas when it was killed")
        promoted: list[RedisServer] = []

        def done() -> bool:
            survivor = self._any_running()
            if "cluster_state:ok" not in command(survivor, "CLUSTER", "INFO"):
                return False
            ports = {v.port for v in self.view(survivor) if v.is_master and v.slots} & candidates
            promoted[:] = [self._node(port) for port in ports]
            return bool(promoted)

        wait_until(done, timeout, f"failover of the master on port {old_master.port}")
        return promoted[0]

    def restart(self, node: RedisServer, timeout: float = 30) -> None:
        """Start a killed node again; a former master learns from its peers that a replica
        took its slots, and rejoins as that replica's replica."""
        node.start()
        self.wait_settled(timeout)

    def wait_settled(self, timeout: float = 30) -> None:
        """Until every running node says cluster_state:ok, all agree on who serves slots,
        none of them is suspected failing, and every replica is in sync with its master."""
        wait_until(self._settled, timeout, "Redis Cluster settled")

    def _settled(self) -> bool:
        running = [node for node in self.nodes if node.running]
        serving: set[frozenset[int]] = set()
        for node in running:
            if "cluster_state:ok" not in command(node, "CLUSTER", "INFO"):
                return False
            views = self.view(node)
            if any(v.failing for v in views if self._node(v.port).running):
                return False
            serving.add(frozenset(v.port for v in views if v.is_master and v.slots))
            me = next(v for v in views if "myself" in v.flags)
            if not me.is_master and not _replica_synced(node):
                return False
        return len(serving) == 1

    def _all_met(self) -> bool:
        """Every node knows every other one, and has a handshake with none pending."""
        for node in self.nodes:
            views = self.view(node)
            if len(views) < len(self.nodes) or any("handshake" in v.flags for v in views):
                return False
        return True

    def _all_replicas_known(self) -> bool:
        replicas = len(self.nodes) - self.masters_count
        return all(
            sum(v.master_id is not None for v in self.view(node)) == replicas for node in self.nodes
        )

    def _node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def _any_running(self) -> RedisServer:
        return next(node for node in self.nodes if node.running)


def _replica_synced(node: RedisServer) -> bool:
    """Link up, and the AOF rewritten after the full sync: until then Redis 6.2 answers
    SIGTERM with "Writing initial AOF, can't exit" and keeps running (no retry)."""
    if command(node, "INFO", "replication")["master_link_status"] != "up":
        return False
    persistence = command(node, "INFO", "persistence")
    return not (persistence["aof_rewrite_in_progress"] or persistence["aof_rewrite_scheduled"])


def command(node: RedisServer, *args: str | bytes) -> Any:
    """One command on one node, on a fresh connection: nodes come and go in these tests.
    Replies are redis-py's: text for CLUSTER INFO and NODES, a dict for INFO."""
    with redis.Redis(
        host="127.0.0.1", port=node.port, decode_responses=True, socket_timeout=2
    ) as client:
        return client.execute_command(*args)


def _parse_node_line(line: str) -> NodeView:
    # <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <epoch> <link> <slot>...
    fields = line.split()
    port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
    slots = 0
    for spec in fields[8:]:
        if spec.startswith("["):  # a slot being migrated or imported
            continue
        start, _, end = spec.partition("-")
        slots += int(end or start) - int(start) + 1
    master_id = None if fields[3] == "-" else fields[3]
    return NodeView(fields[0], port, frozenset(fields[2].split(",")), master_id, slots)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose bus port (port + 10000) is free and valid too."""
    ports: list[int] = []
    taken: set[int] = set()
    while len(ports) < count:
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if not {port, bus} & taken and bus < 65536 and port_is_free(bus):
            ports.append(port)
            taken |= {port, bus}
    return ports
