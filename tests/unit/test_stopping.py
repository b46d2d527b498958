"""``stopping.stop``: cancelled tasks end, also one that loses a cancel, as a Redis read can."""

from __future__ import annotations

import asyncio

from sandq import stopping


async def test_a_task_that_loses_a_cancel_is_cancelled_again_until_it_ends() -> None:
    cancels_seen = 0

    async def forgetful() -> None:
        nonlocal cancels_seen
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancels_seen += 1
                if cancels_seen == 1:  # dropped, as redis-py's read under asyncio.timeout can
                    continue
                raise

    task = asyncio.create_task(forgetful())
    await asyncio.sleep(0)

    assert await stopping.stop([task]) == set()
    assert task.cancelled() and cancels_seen == 2


async def test_a_task_that_does_not_end_is_returned() -> None:
    stubborn_now = True

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if not stubborn_now:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)

    assert await stopping.stop([task], tries=2) == {task}
    stubborn_now = False
    assert await stopping.stop([task]) == set()
