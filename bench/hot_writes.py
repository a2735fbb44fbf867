"""Purchases for a few hot accounts at about 200/s: `python -m bench.hot_writes URL SECONDS ACCOUNT...`."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import aiohttp


async def main(base: str, seconds: float, accounts: list[str]) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(base) as session:
        i = 0
        while time.monotonic() < deadline:
            buyer, seller = accounts[i % len(accounts)], accounts[(i + 1) % len(accounts)]
            body = {
                "transaction_id": f"hot-{uuid.uuid4().hex}",
                "customer_info": {"customer_name": "B", "customer_account": buyer, "ammount": 100},
                "seller_info": {"seller_name": "S", "seller_account": seller},
            }
            async with session.post("/purchase", json=body) as reply:
                await reply.read()
            i += 1
            await asyncio.sleep(0.005)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))
