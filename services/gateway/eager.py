"""Start a coroutine at once, in the caller: done there if it never waits, else a task.

A WebSocket send almost never waits (only when the client's socket buffer is full), yet a task
per send, or a writer task per client woken for every frame, costs a loop round trip each: for
a fan-out to a thousand clients that is most of the time. `start` steps the coroutine right
away and only hands it to a task when it suspends, as Python 3.12's eager tasks do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


def start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coro` up to its first suspension; None if it finished, else the task finishing it.

    An exception it raises before suspending propagates to the caller.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    return asyncio.ensure_future(_Continue(coro, waiting_on).run())


class _Continue:
    """Go on with a coroutine that suspended outside any task, as a task would have."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._coro = coro
        self._waiting_on = waiting_on

    async def run(self) -> None:
        await self

    def __await__(self) -> Generator[Any, None, None]:
        coro, waiting_on = self._coro, self._waiting_on
        while True:
            try:
                # The future the coroutine waits on goes to the enclosing task, which wakes us
                # when it is done, exactly as it would have woken the coroutine itself.
                yield waiting_on
            except BaseException as exc:  # the task was cancelled: the coroutine is told so
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = coro.send(None)
                except StopIteration:
                    return
