"""Fixtures of the integration tests: parts of the gateway against a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.settings import Settings
from gateway.redis_io.nodes import Nodes


@pytest.fixture
async def nodes(settings: Settings, redis: Redis) -> AsyncIterator[Nodes]:
    """The gateway's Redis connections (``Nodes``), opened on the test's Redis."""
    opened = Nodes(settings)
    await opened.start()
    yield opened
    await opened.close()
