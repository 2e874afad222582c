"""Polling until a condition holds: the one way tests wait for something another process does."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "the condition",
    interval: float = 0.05,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``check`` until it returns something truthy, and return that; fail after ``timeout`` s.

    ``sleep`` waits between calls: a browser test passes Playwright's own wait, which keeps
    the page's event loop turning where ``time.sleep`` would block it.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        sleep(interval)


async def eventually(check: Callable[[], object], timeout: float = 2.0, interval: float = 0.01) -> bool:
    """In a test's event loop: whether ``check`` (a function, or a coroutine function) gives
    something truthy within ``timeout`` seconds. The caller asserts it, or goes on."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(interval)
