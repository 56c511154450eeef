"""The one backoff function: every retry and every idle wait in the pipeline uses it."""

from __future__ import annotations

import random


def compute_backoff(attempt: int, *, base_s: float = 0.1, cap_s: float = 10.0, jitter: bool = True) -> float:
    """Exponential delay for the attempt-th consecutive failure (0-based), capped, with full jitter.

    Full jitter spreads consumers that failed together (a Postgres restart) so they do not reconnect in step.
    """
    delay: float = min(cap_s, base_s * (2 ** min(attempt, 32)))
    return random.uniform(delay / 2, delay) if jitter else delay
