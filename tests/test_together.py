"""Together: what arrives while a batch is on its way goes in the next one."""

from __future__ import annotations

import asyncio

import pytest

from app.core.together import Together


class Sender:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[object]:
        self.batches.append(items)
        await self.release.wait()
        return [ValueError(n) if n < 0 else n * 10 for n in items]


async def test_items_arriving_meanwhile_go_in_the_next_batch_at_most_max_batch() -> None:
    send = Sender()
    idle: list[bool] = []
    together: Together[int, int] = Together(send, max_batch=3, on_idle=lambda: idle.append(True))
    first = [asyncio.create_task(together(n)) for n in (1, 2)]  # the same turn: one batch
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(together(n)) for n in range(3, 8)]
    await asyncio.sleep(0.01)
    assert send.batches == [[1, 2]]  # the others wait for it
    send.release.set()
    assert await asyncio.gather(*first, *later) == [10, 20, 30, 40, 50, 60, 70]
    assert send.batches == [[1, 2], [3, 4, 5], [6, 7]]
    assert idle == [True]  # once, when nothing was left


async def test_an_error_answer_goes_to_its_caller_and_a_raised_one_to_the_whole_batch() -> None:
    send = Sender()
    send.release.set()
    together: Together[int, int] = Together(send)
    answers = await asyncio.gather(together(1), together(-1), return_exceptions=True)
    assert answers[0] == 10 and isinstance(answers[1], ValueError)

    async def broken(items: list[int]) -> list[int]:
        raise ConnectionError("down")

    failing: Together[int, int] = Together(broken)
    answers = await asyncio.gather(failing(1), failing(2), return_exceptions=True)
    assert all(isinstance(a, ConnectionError) for a in answers)
    assert await asyncio.gather(together(3)) == [30]  # and the next batch goes on


async def test_a_caller_gone_meanwhile_is_skipped_and_the_others_answered() -> None:
    send = Sender()
    together: Together[int, int] = Together(send)
    gone, stays = asyncio.create_task(together(1)), asyncio.create_task(together(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    send.release.set()
    assert await stays == 20
    with pytest.raises(asyncio.CancelledError):
        await gone
