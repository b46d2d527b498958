"""A loop of real ``redis.asyncio`` commands stops, though a cancel landing in a read can be lost."""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

from sandq.stopping import stop


async def test_a_loop_of_redis_commands_stops_every_time(aredis: aioredis.Redis) -> None:
    lost = 0
    for _ in range(20):
        async def loop() -> None:
            while True:
                await aredis.get("sandq-test:stopping")

        task = asyncio.create_task(loop())
        await asyncio.sleep(random.uniform(0, 0.005))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.2)
        lost += not done  # the first cancel was lost: the loop goes on

        assert await stop([task]) == set()
        assert task.cancelled()
    print(f"first cancels lost: {lost} of 20")
