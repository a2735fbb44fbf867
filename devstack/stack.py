"""The embedded stack: Redis and PostgreSQL from wheels, data in one folder, schema migrated.

``make run`` keeps its data folder across runs. Redis 8 reads the AOF folder a Redis 6.2
left (appendonly.aof is upgraded in place), but 6.2 cannot read what 8 wrote: switching a
data folder back to ``MONOKERA_EMBEDDED_REDIS=6.2`` needs a fresh one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from core.migrate import migrate_url
from devstack.postgres_server import PostgresServer
from devstack.processes import free_port
from devstack.redis_server import DEFAULT_REDIS_VERSION, RedisServer, RedisVersion

DATABASE = "monokera"


@dataclass
class EmbeddedStack:
    data_dir: Path
    redis_port: int | None = None
    pg_port: int | None = None
    appendfsync: str = "everysec"
    durable: bool = True
    redis_version: RedisVersion = DEFAULT_REDIS_VERSION
    pass_fds: tuple[int, ...] = ()
    """Descriptors both servers inherit: ``make run``'s data-folder lock."""
    redis: RedisServer = field(init=False)
    postgres: PostgresServer = field(init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.redis = RedisServer(
            self.data_dir / "redis",
            free_port(self.redis_port),
            appendfsync=self.appendfsync,
            version=self.redis_version,
            pass_fds=self.pass_fds,
        )
        self.postgres = PostgresServer(
            self.data_dir / "postgres",
            free_port(self.pg_port),
            durable=self.durable,
            pass_fds=self.pass_fds,
        )

    @property
    def redis_url(self) -> str:
        return self.redis.url

    @property
    def database_url(self) -> str:
        return self.postgres.url(DATABASE)

    def start(self, *, redis: bool = True, postgres: bool = True) -> None:
        """Start the servers asked for; PostgreSQL gets its database and the migrations."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if redis:
            self.redis.start()
        if postgres:
            self.postgres.start()
            self.postgres.create_database(DATABASE)
            asyncio.run(migrate_url(self.database_url))

    def stop(self) -> None:
        """Stop whatever was started; safe to call more than once."""
        self.postgres.stop()
        self.redis.stop()
