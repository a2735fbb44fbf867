"""Redis replies read as text, and stream entry ids as tuples that sort in stream order.

The clients are not told to decode (payloads are msgspec bytes, read as they are), so
names, ids and figures in replies arrive as bytes; the flusher, the backlog measure and
the operator tools all read them through these.
"""

from __future__ import annotations


def text(value: object) -> str:
    """A Redis reply value as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_id(entry_id: str) -> tuple[int, int]:
    """``<ms>-<seq>`` as ``(ms, seq)``: compared as tuples, as Redis orders entries."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"
