"""Retries with exponential backoff and jitter, shared by uploads and webhooks.

``RetryPolicy.delay`` is pure (the jitter draw is a parameter); ``retrying``
runs an async operation under a policy, sleeping between attempts, and gives
up with ``RetriesExhausted`` carrying the last error.  An error the caller
marks as permanent (``is_permanent``) is not retried.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts, and how long to wait after each failed one.

    The nominal wait after failed attempt ``n`` (1-based) is
    ``min(max_s, base_s * factor ** (n - 1))``; jitter spreads it uniformly over
    ``±jitter`` of itself so that many clients do not retry in step.
    """

    attempts: int = 6
    base_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_s < 0 or self.max_s < 0 or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("invalid retry policy")

    def nominal(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), before jitter."""
        return min(self.max_s, self.base_s * self.factor ** max(0, attempt - 1))

    def delay(self, attempt: int, draw: float) -> float:
        """The wait after failed attempt ``attempt`` with jitter ``draw`` in [0, 1)."""
        return self.nominal(attempt) * (1.0 - self.jitter + 2.0 * self.jitter * draw)

    def worst_case_s(self) -> float:
        """The longest total wait over all retries (jitter at its maximum)."""
        return sum(self.nominal(n) * (1.0 + self.jitter) for n in range(1, self.attempts))


class RetriesExhausted(Exception):
    """Every attempt failed (or one failed permanently); ``last`` is the last error."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"{describe_error(last)} (after {attempts} attempt{'s' if attempts != 1 else ''})")
        self.attempts = attempts
        self.last = last


def describe_error(exc: BaseException) -> str:
    """One line for an error: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return text or type(exc).__name__


async def retrying(operation: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                   on_retry: Optional[Callable[[int, BaseException, float], None]] = None,
                   is_permanent: Callable[[BaseException], bool] = lambda exc: False,
                   draw: Callable[[], float] = random.random,
                   sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> T:
    """Run ``operation`` until it succeeds, at most ``policy.attempts`` times.

    ``on_retry(attempt, error, delay)`` is called before each wait.  Raises
    ``RetriesExhausted`` after the last attempt or a permanent error;
    cancellation is never swallowed.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except Exception as exc:  # noqa: BLE001 - every failure is retried or reported
            if attempt >= policy.attempts or is_permanent(exc):
                raise RetriesExhausted(attempt, exc) from exc
            wait = policy.delay(attempt, draw())
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            await sleep(wait)
