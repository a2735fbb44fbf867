"""How long the flusher waits before trying again what failed for want of PostgreSQL or Redis.

One policy for every retry loop of the worker (a batch's write, a hold or an
acknowledgement, a whole step of ``run``): the delay doubles from ``first_s`` with each
failure in a row, up to ``max_s``, and a loop that succeeds starts over from the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 0.05
    max_s: float = 5.0
    """Built from ``MONOKERA_PG_RETRY_MAX_S`` (``FlusherConfig.from_settings``): this one cap
    bounds the retries for Redis as well as for PostgreSQL; the variable keeps the PG in
    its name for compatibility with deployments that set it."""

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (1, 2, ...): ``first_s``,
        then twice the previous delay, at most ``max_s``.

        The first delay is ``first_s`` even when ``max_s`` is lower, as the flusher's loops
        always waited; the cap applies from the second on."""
        if failures <= 1:
            return self.first_s
        try:
            return min(math.ldexp(self.first_s, failures - 1), self.max_s)
        except OverflowError:  # a thousand doublings and more: long since at the cap
            return self.max_s
