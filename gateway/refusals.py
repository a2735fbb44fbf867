"""What the gateway's parts refuse with when they cannot do a thing now: domain errors,
raised by the appender, the backpressure and the readers, that know nothing of HTTP.

Unavailable                 nothing was done; the same request can succeed later
├── StoreUnavailable        Redis unreachable or failing: nothing was acknowledged
│   └── NotReplicated       written on the primary, too few replicas confirmed it in time
├── HistoryUnavailable      PostgreSQL unreachable or refusing a read for a while
└── Overloaded              backlog past its limits, or too many appends waiting

``gateway.api.errors`` is the one place they become HTTP answers (503, a code per class,
Retry-After). The message of a StoreUnavailable never reaches a client: Redis's own error
text can name internal addresses (``MOVED 1234 10.0.3.17:6379``), so the answer's text is
fixed; whoever raises one logs the error it stands for.
"""

from __future__ import annotations


class Unavailable(Exception):
    """The gateway cannot do this now; nothing was done, and a retry later is safe."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class StoreUnavailable(Unavailable):
    """Redis unreachable or failing: nothing was acknowledged."""


class NotReplicated(StoreUnavailable):
    """Appended on the primary, but fewer replicas than required confirmed it in time."""


class HistoryUnavailable(Unavailable):
    """PostgreSQL unreachable, or refusing a read for a while."""


class Overloaded(Unavailable):
    """The backlog is past its limits, or too many purchases already wait for Redis."""
