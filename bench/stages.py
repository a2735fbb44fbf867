"""The stage table: each stage against the least it can cost, in the same run.

A row is a measured figure, its reference measured in the same run, their ratio, and the
target for that ratio. CPU figures are per purchase (or per request, per entry, per row),
read from /proc, so the ratio holds on any machine however busy: it says how many cores a
deployment needs, not how fast this box happens to be today.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Stage:
    stage: str
    measured: float
    reference: float
    unit: str
    reference_name: str
    target: float | None
    """The ratio aimed at; None: reported, no target."""
    at_least: bool = False
    """The target is a floor (ratio >= target), not a ceiling."""

    @property
    def ratio(self) -> float:
        return self.measured / self.reference if self.reference else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.at_least else self.ratio <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def render(stages: list[Stage]) -> str:
    lines = [
        f"{'stage':<34} {'measured':>10} {'reference':>10} {'unit':<22} {'ratio':>6} {'target':>7} {'met':>4}  reference",
    ]
    for s in stages:
        target = "-" if s.target is None else ("≥" if s.at_least else "≤") + f"{s.target:g}"
        met = {None: "-", True: "yes", False: "NO"}[s.met]
        lines.append(
            f"{s.stage:<34} {_num(s.measured):>10} {_num(s.reference):>10} {s.unit:<22}"
            f" {s.ratio:>6.2f} {target:>7} {met:>4}  {s.reference_name}"
        )
    return "\n".join(lines)


def _num(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"
