"""The flusher's backoff: the delays its retry loops always waited, from one policy."""

from __future__ import annotations

from flusher.retry import Backoff


def test_delays_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(first_s=0.05, max_s=0.5)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_delays_match_the_doubling_loop_they_replace() -> None:
    backoff = Backoff(max_s=5.0)
    delay, expected = 0.05, []
    for _ in range(12):
        expected.append(delay)
        delay = min(delay * 2, 5.0)
    assert [backoff.delay(n) for n in range(1, 13)] == expected


def test_the_first_delay_is_not_capped_and_the_second_is() -> None:
    backoff = Backoff(first_s=0.05, max_s=0.01)
    assert (backoff.delay(1), backoff.delay(2)) == (0.05, 0.01)


def test_a_very_long_outage_stays_at_the_cap() -> None:
    assert Backoff(max_s=5.0).delay(100_000) == 5.0
