"""A transaction's shard: stable, and every shard used."""

from __future__ import annotations

from core.constants import shard_of

SHARDS = 4


def test_shard_of_is_stable_and_uses_every_shard() -> None:
    picked = [shard_of(f"tx-{i}", SHARDS) for i in range(1000)]
    assert set(picked) == set(range(SHARDS))
    assert all(picked.count(s) > 150 for s in range(SHARDS))  # CRC-32 spreads evenly
    assert shard_of("312312312312", SHARDS) == shard_of("312312312312", SHARDS)
    assert shard_of("anything", 1) == 0
