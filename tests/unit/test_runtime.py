"""The runtime's shutdown helpers: a step that must not stop halfway finishes before the cancel."""

from __future__ import annotations

import asyncio

import pytest

from shared.runtime import uninterrupted


async def _two_halves(done: list[str]) -> int:
    done.append("stored")
    await asyncio.sleep(0.05)
    done.append("published")
    return 7


def test_a_cancel_waits_for_the_step_then_lands() -> None:
    done: list[str] = []

    async def worker() -> None:
        await uninterrupted(_two_halves(done))
        done.append("after the step")  # never reached: the cancel lands right after the step

    async def scenario() -> None:
        task = asyncio.ensure_future(worker())
        await asyncio.sleep(0.01)
        assert done == ["stored"]
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # a repeated cancel is absorbed as well
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert done == ["stored", "published"]


def test_without_a_cancel_the_result_comes_back() -> None:
    done: list[str] = []
    assert asyncio.run(uninterrupted(_two_halves(done))) == 7
    assert done == ["stored", "published"]


def test_the_step_s_own_error_propagates() -> None:
    async def failing() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("store away")

    with pytest.raises(ConnectionError, match="store away"):
        asyncio.run(uninterrupted(failing()))
